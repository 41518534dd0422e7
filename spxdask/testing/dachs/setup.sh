#!/bin/sh
# Install GAVO DaCHS from Debian and serve a TAP endpoint with spherex.plane / spherex.artifact
# on 127.0.0.1 (default port 8089). Run as root; idempotent (a re-run re-imports and restarts).
# Tests publish their own rows with `python -m spxdask.testing.dachs publish ...`.
# Follows shared/reference/dachs-tap-recipe.md, including its two traps.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=${DACHS_PORT:-8089}
export DEBIAN_FRONTEND=noninteractive
LOG=${DACHS_SETUP_LOG:-/tmp/spxdask-dachs-setup.log}
: > "$LOG"
quiet() { "$@" >>"$LOG" 2>&1 || { tail -40 "$LOG"; exit 1; }; }

if ! command -v dachs >/dev/null 2>&1; then
  quiet apt-get update
  # PostgreSQL must run before gavodachs2-server's postinst ("dachs init")
  quiet apt-get install -y --no-install-recommends postgresql-15-pgsphere
fi
# pgsphere 1.1.1's two DaCHS compatibility operators break CREATE EXTENSION on newer
# PostgreSQL 15 minor releases: drop their COMMUTATOR/NEGATOR clauses (idempotent)
sed -i '/backwards-compatible operators for GAVO DaCHS/,/^-- debugging/{/COMMUTATOR\|NEGATOR/d}' \
  /usr/share/postgresql/15/extension/pg_sphere--1.2.0.sql
pg_lsclusters -h | grep -q '^15 *main ' || pg_createcluster 15 main
pg_ctlcluster 15 main status >/dev/null 2>&1 || pg_ctlcluster 15 main start
cat > /etc/gavo.rc <<RC
[web]
bindAddress: 127.0.0.1
serverPort: $PORT
serverURL: http://127.0.0.1:$PORT
[async]
defaultExecTime: 600
RC
if ! command -v dachs >/dev/null 2>&1; then
  quiet apt-get install -y --no-install-recommends gavodachs2-server
fi
install -d -o dachsroot -g gavo /var/gavo/inputs/spherex/data
install -o dachsroot -g gavo -m 644 "$HERE/q.rd" /var/gavo/inputs/spherex/q.rd
for t in plane artifact; do
  [ -s /var/gavo/inputs/spherex/data/$t.csv ] || install -o dachsroot -g gavo -m 664 "$HERE/empty_$t.csv" /var/gavo/inputs/spherex/data/$t.csv
done
chmod 775 /var/gavo/inputs/spherex/data
(cd /var/gavo/inputs/spherex && quiet su dachsroot -c "dachs imp q")
env -i LANG=C PATH=/usr/bin:/bin dachs serve stop >/dev/null 2>&1 || true
env -i LANG=C PATH=/usr/bin:/bin dachs serve start >>"$LOG" 2>&1
i=0
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/tap/availability"; do
  i=$((i+1)); [ $i -lt 200 ] || { echo "DaCHS did not come up"; tail -20 "$LOG"; exit 1; }
  sleep 0.1
done
echo "TAP endpoint: http://127.0.0.1:$PORT/tap"
