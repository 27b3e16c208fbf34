"""One module per figure (1 to 6) and the organization-create throughput; see bench/README.md.

Each `measure(ctx)` runs its phases, records them in `ctx.res.phases` and appends its figure to
`ctx.res.figures` (the create throughput goes to `ctx.res.extra["create"]`).
"""
