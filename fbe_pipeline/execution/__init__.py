"""Paper execution: the gateway, brokers, sizing, exits, risk controls and approvals (SPEC §5).
Imported by nothing in detection."""
