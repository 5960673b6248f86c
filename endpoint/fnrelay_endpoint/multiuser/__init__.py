"""The multi-user endpoint: the `manager`, the per-user `child` it starts, the `identity`
mapping of broker users to local accounts, the child config's `usertemplate`, and their
default files in `templates/` (package data, copied by ``configure --multi-user``)."""
