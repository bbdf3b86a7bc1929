"""Operating the connector's data: backups, and exports for accounting."""
