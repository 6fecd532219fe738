"""REST API routes; the host project includes them, e.g. under ``api/modelslab/``."""

app_name = "modelslab-api"
urlpatterns: list = []
