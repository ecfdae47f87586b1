"""TALOS billing: accounts, API keys, node tokens and the credit ledger."""
