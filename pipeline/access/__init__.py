"""Least privilege: who may do what for which purpose (`policy`), who the caller is
(`identity`), and the audit log of what they did (`pipeline.ledger.audit_log`)."""
