"""What to do about risk: the playbook, retention messages, the contact policy, outcomes and lift."""
