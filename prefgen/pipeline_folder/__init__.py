"""A pipeline folder of one's own (`prefgen new DIR`): the project's pipeline on a platform's logs and photos.

The folder holds its own dvc.yaml (the project's stages less those that make or judge a synthetic world), params.yaml
(the catalogue pointing at the data, a code fingerprint per stage), a default campaign, a git repository, a DVC cache,
an MLflow store and prefect.yaml. Everything in it is generated from the installed prefgen; no project file is edited.
"""
