#!/bin/sh
# Stop the DaCHS server and PostgreSQL that setup.sh started.
set -u
env -i LANG=C PATH=/usr/bin:/bin dachs serve stop || true
pg_ctlcluster 15 main stop || true
