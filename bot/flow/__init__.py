"""The steps that `bot.pipeline.Pipeline` sequences, one module a step.

- `context`: the live objects of a service, the result of a run, and the coordinator's surface the steps use
- `gates`: whether anything may be proposed or applied now (pause, maintenance, mutes, circuit breakers)
- `observe`: read the sources, count errors into incidents
- `diagnosis`: read-only diagnosis, playbook fallback, retries, candidates materialised into a proposal
- `approval`: honour a person's decision only while it is still valid
- `apply`: apply, restart, verify, keep or revert

The coordinator owns the state; a step reads it through `context.Flow` and never calls the next step itself.
"""
