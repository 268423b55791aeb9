"""Refusjon rules: small functions, each declared once with its id and source.

A rule is a plain function `rule(bill, ctx) -> Finding | None` decorated with
`@rule(...)`, which carries everything about it: the id from `shared/rules/RULES.md`,
the source document and paragraph, the remark number and the text the sender sees.
The engine (`daemon.rules.decide`) evaluates every rule on every bill — never stopping at
the first failure — and keeps a trace of what ran and what fired.
"""
