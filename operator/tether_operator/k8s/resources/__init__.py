"""Tether's custom resources: their models, the CRDs generated from them, object
naming and conditions."""
