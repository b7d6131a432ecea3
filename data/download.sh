#!/bin/sh
# Fetch MNIST into this folder, where the tutorials look after the working directory.
# Extra arguments go to the fetch command (e.g. --format idx, --mirror URL).
exec python -m deeplearning_tutorials.datasets --dest "$(dirname "$0")" "$@"
