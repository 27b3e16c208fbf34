"""Names and slugs, name claims, operations (intents, leases, fencing), the steps of create,
rename and delete, the reconciler, and the tenant collections."""
