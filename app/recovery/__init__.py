"""Account recovery: `POST /admin/password/forgot` and `POST /admin/password/reset` (contract
section 2), the reset mail, and the records of mailed reset tokens."""
