"""What the tests (and the bench) share: clients, in-process apps, service processes, stores.

- `clients`: the test password and secret, request bodies, create-and-login, bearer headers;
- `apps`: settings for tests and the in-process app (over the in-memory double or a real store);
- `processes`: the service as a subprocess on a free port, and stopping processes;
- `stores`: starting an nx-27017 server and waiting until it answers, emptying it;
- `consistency`: the one check that a store holds whole organizations and nothing else.

Nothing here imports a test module, and `processes`/`stores` import no pytest: the bench uses them.
"""
