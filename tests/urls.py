from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/modelslab/", include("django_modelslab.api.urls")),
    path("modelslab/", include("django_modelslab.urls")),
    # Browser tests load stored images from the live server (DEBUG is off in tests).
    re_path(r"^media/(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT}),
]
