"""Data shapes.

``models.tables`` holds the SQLAlchemy ORM (imported by the API and activities
only); ``models.schemas`` holds the pydantic models shared by the API,
workflows and activities. Keep this ``__init__`` empty so that importing the
schemas from a workflow never pulls SQLAlchemy into the workflow sandbox.
"""
