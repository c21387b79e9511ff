"""Tether: the operator, scheduler and pure engine behind durable sticky workflows."""
