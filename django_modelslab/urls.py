"""The ModelsLab webhook receiver; the host project includes it, e.g. under ``modelslab/``."""

app_name = "modelslab"
urlpatterns: list = []
