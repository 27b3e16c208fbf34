"""Teams: the members of an organization, their roles, and invitations (contract section 1)."""
