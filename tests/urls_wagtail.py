from django.urls import include, path
from wagtail import urls as wagtail_urls
from wagtail.admin import urls as wagtailadmin_urls

from .urls import urlpatterns as base_urlpatterns

urlpatterns = [
    *base_urlpatterns,
    path("cms/", include(wagtailadmin_urls)),
    path("", include(wagtail_urls)),
]
