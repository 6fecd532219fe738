from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from wagtail import urls as wagtail_urls
from wagtail.admin import urls as wagtailadmin_urls

from example_project import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("cms/", include(wagtailadmin_urls)),
    path("studio/", views.studio, name="studio"),
    path("articles/", include("example_project.articles.urls")),
    path("api/modelslab/", include("django_modelslab.api.urls")),
    path("modelslab/", include("django_modelslab.urls")),
    *static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT),
    path("", include(wagtail_urls)),  # the pages: last
]
