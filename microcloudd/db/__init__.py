"""The Microcloud cluster database: schema, typed records, and access from asyncio.

Public surface: `Database` (db.database), the record classes (db.records), `Change`
(db.cache), and `DatabaseService` (db.service) which runs the local ovsdb-server.
"""
