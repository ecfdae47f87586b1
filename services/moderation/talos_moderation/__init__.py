"""TALOS moderation: the prompt hard limit and the adult-output classifier."""
