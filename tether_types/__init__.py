"""Tether's typed vocabulary: what crosses the engine's wall, written once.

The engine, the scheduler, the operator and the SDK all import it; it imports nothing
but the standard library. `wire` holds names, shapes and defaults of messages and
history; `commands` the workflow commands; `notices` what the engine tells a person
(and the facts behind it); `retry` the retry rules both sides apply.
"""
