"""Who is calling and what they may do: OIDC, API tokens, SCIM, role bindings, the one
authorization function (``policy.authorize``), and the audit log."""
