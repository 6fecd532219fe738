"""The REST API (Django REST framework): include ``django_modelslab.api.urls``."""
