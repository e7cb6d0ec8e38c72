#!/usr/bin/env bash
# The backup Job's program: backup (the default), verify, restore-test or restore, by
# $STRONGHOLD_MODE.
# It reaches the pod in the BackupSchedule's program ConfigMap (builders/backup_program.py)
# with stronghold_job.py, the Python helper it calls for what bash does badly.
#
# Why the row counts are exact and consistent with the dump: one psql session starts a
# REPEATABLE READ READ ONLY transaction and exports its snapshot; pg_dump dumps with
# --snapshot (the same snapshot). A plain dump's rows are counted in the stream as it passes
# (each COPY ... FROM stdin; section holds one line per row), which costs the database
# nothing; a custom dump is written by pg_dump itself, so its counts are taken in the
# exporting transaction. Either way the counts are what the snapshot holds.
set -euo pipefail
umask 077
# The manifest's durationSeconds is measured from here (the timestamps have 1 s resolution).
export STRONGHOLD_T0="$EPOCHREALTIME"
W="${STRONGHOLD_WORK:-/var/run/stronghold/work}"
H="$W/program/stronghold_job.py"
ERR="$W/err.log"
stage=setup
tmp=""
: > "$ERR"
# Run from a private copy: a ConfigMap update swaps the mounted files under a running pod,
# and one run must not mix two versions of the program.
P=$(dirname "${BASH_SOURCE[0]}")
mkdir -p "$W/program"
cp -RL "$P/stronghold_job.py" "$P/throwaway_pg.py" "$P/stronghold_runs.py" "$P/count-rows.sql" \
  "$P/target-objects.sql" "$P/stronghold_operator" \
  "$W/program/"
export PYTHONDONTWRITEBYTECODE=1
on_error() {
  code=$?
  if [ -n "$tmp" ]; then rm -f "$tmp" || true; fi
  if [ -n "${run_tmp:-}" ]; then rm -rf "$run_tmp" || true; fi
  python3 "$H" fail "$stage" "$ERR" || true
  exit "$code"
}
trap on_error ERR
python3 "$H" pgpass 2>>"$ERR"
if [ -f "$W/.pgpass" ]; then export PGPASSFILE="$W/.pgpass"; fi
export HOME="$W"
stage=storage
mkdir -p "$BACKUP_DIR" 2>>"$ERR"
# A restore (stronghold backup restore) mounts the backups read-only: it only reads them.
if [ "$STRONGHOLD_MODE" != restore ]; then
  probe="$BACKUP_DIR/.stronghold-write-test.$$"
  : > "$probe" 2>>"$ERR"
  rm -f "$probe"
fi
COUNT_SQL=$(cat "$W/program/count-rows.sql")

case "$STRONGHOLD_MODE" in
verify | restore-test | restore)
  # Exit 2: the helper ran and reported a failure itself; anything else non-zero crashed.
  stage=$STRONGHOLD_MODE
  rc=0
  python3 "$H" "$STRONGHOLD_MODE" "$COUNT_SQL" 2>>"$ERR" || rc=$?
  if [ "$rc" = 2 ]; then exit 1; fi
  if [ "$rc" != 0 ]; then python3 "$H" fail "$stage" "$ERR" || true; exit "$rc"; fi
  exit 0
  ;;
esac

# --- backup ---------------------------------------------------------------------------
ext=sql.gz
[ "$BACKUP_FORMAT" = custom ] && ext=dump
while :; do
  ts=$(date -u +%Y%m%d_%H%M%S)
  final="db_backup_${ts}.${ext}"
  [ -e "$BACKUP_DIR/$final" ] || break
  sleep 1
done
# pigz writes the same gzip format at the same level with every core the pod may use.
COMPRESSOR=gzip
if command -v pigz > /dev/null 2>&1; then COMPRESSOR=pigz; fi
export COMPRESSOR
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
tmp="$BACKUP_DIR/.${final}.${JOB_NAME:-local}.partial"

stage=connect
# One session holds a REPEATABLE READ snapshot: pg_dump uses it, the row counts too.
coproc PSQL { exec psql -X -w -q -At -v ON_ERROR_STOP=1 2>>"$ERR"; }
# bash unsets PSQL_PID the moment the coprocess exits: keep the pid while we know it.
# shellcheck disable=SC2153 # set by coproc
psql_pid=$PSQL_PID
PIN=${PSQL[1]}
POUT=${PSQL[0]}
printf '%s\n' "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;" \
  "SELECT 'ver:' || current_setting('server_version');" \
  "SELECT 'snap:' || pg_export_snapshot();" >&"$PIN"
snap=""
while read -t 120 -r line <&"$POUT"; do
  case "$line" in
    ver:*) printf '%s\n' "${line#ver:}" > "$W/server_version" ;;
    snap:*) snap=${line#snap:}; break ;;
  esac
done
[ -n "$snap" ] || { echo "could not open a snapshot (see above)" >>"$ERR"; false; }

stage=dump
t_dump=$EPOCHREALTIME
# COMMIT waits for pg_dump: an ended transaction's snapshot cannot be imported.
if [ "$BACKUP_FORMAT" = custom ]; then
  # pg_dump writes the archive itself: the row counts run now, in the exporting session,
  # while pg_dump reads the same snapshot in its own.
  printf '%s\n' "$COUNT_SQL" "SELECT 'end:counts';" >&"$PIN"
  pg_dump --no-password --snapshot="$snap" -Fc -Z "$GZIP_LEVEL" -f "$tmp" 2>>"$ERR"
else
  # The helper writes and fsyncs the archive and checks it on the way: sha256, a full
  # decompression, the dump's trailer and the rows of every table (counts.txt), in the
  # pass that writes it.
  printf '%s\n' "SELECT 'end:counts';" >&"$PIN"
  pg_dump --no-password --snapshot="$snap" 2>>"$ERR" | "$COMPRESSOR" "-$GZIP_LEVEL" 2>>"$ERR" \
    | python3 "$H" sink "$tmp" "$W/stream" 2>>"$ERR"
fi
dumped=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t_dumped=$EPOCHREALTIME

stage=counts
[ "$BACKUP_FORMAT" = custom ] && : > "$W/counts.txt"
got_end=""
while read -t 3600 -r line <&"$POUT"; do
  [ "$line" = "end:counts" ] && { got_end=1; break; }
  printf '%s\n' "$line" >> "$W/counts.txt"
done
[ -n "$got_end" ] || { echo "row counts did not complete" >>"$ERR"; false; }
printf '%s\n' "COMMIT;" >&"$PIN"
exec {PIN}>&-
# The counts were read back above; psql's own exit status adds nothing.
wait "$psql_pid" 2>/dev/null || true
t_counted=$EPOCHREALTIME

stage=verify
sha=$(sha256sum "$tmp" | cut -d' ' -f1)
if [ "$BACKUP_FORMAT" = custom ]; then
  sync "$tmp"
  pg_restore --list "$tmp" > /dev/null 2>>"$ERR"
else
  # What is on disk must be the bytes that were checked while writing.
  read -r checked _ < "$W/stream"
  [ "$sha" = "$checked" ] || {
    echo "archive on disk (sha256 ${sha:0:16}) differs from the verified stream" >>"$ERR"
    false
  }
fi
verified_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
export STRONGHOLD_TIMES="$STRONGHOLD_T0 $t_dump $t_dumped $t_counted $EPOCHREALTIME"

size=$(stat -c %s "$tmp")
if [ -n "${STRONGHOLD_SOURCES:-}" ]; then
  # The run's other sources (volumes, the operator's capture) and its manifest, before the
  # archive gets its final name: a run is published whole or not at all.
  stage=sources
  run_tmp="$BACKUP_DIR/.run_${ts}.${JOB_NAME:-local}.partial"
  python3 "$W/program/stronghold_runs.py" collect \
    "$final" "$run_tmp" "$sha" "$size" 2>>"$ERR"
  run_tmp=""
fi

stage=publish
# One helper run: the manifest, the rename to the final name, retention, the result.
python3 "$H" finish "$final" "$tmp" "$started" "$dumped" "$verified_at" "$sha" "$size" \
  "$snap" 2>>"$ERR"
tmp=""
