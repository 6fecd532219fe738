"""Pillow's side of the package: verifying images (:mod:`.verify`) and deriving smaller ones
(:mod:`.thumbnails`). Nothing here touches a storage or a model."""
