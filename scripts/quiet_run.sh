#!/bin/bash
# Run "$@" with every other python, postgres and pytest process on the machine stopped (SIGSTOP), and
# resume them (SIGCONT) when it ends: a timing on a shared 2-core machine without the other jobs' load.
# New processes that start meanwhile are stopped within half a second; the command's own processes and
# this script's ancestors are never stopped. The command sees METALAB_QUIET_RUN=1 (records say so).
# Usage: scripts/quiet_run.sh taskset -c 0 python experiments/services/throughput.py ...
export METALAB_QUIET_RUN=1
"$@" &
MAIN=$!
STOPPED=$(mktemp)  # the processes this run stopped, to resume at the end
ancestors() { local p=$$; while [ "$p" -gt 1 ]; do echo $p; p=$(ps -o ppid= -p $p | tr -d ' '); done; }
ANCESTORS=" $(ancestors | tr '\n' ' ') "
descendants() { local p=$1; echo $p; for c in $(pgrep -P $p); do descendants $c; done; }
while kill -0 $MAIN 2>/dev/null; do
  candidates=$(pgrep -f "python|postgres|pytest")  # listed before our own tree, so a new child of ours is in both
  mine=" $(descendants $MAIN | tr '\n' ' ') $ANCESTORS "
  for pid in $candidates; do
    case "$mine" in *" $pid "*) continue;; esac
    st=$(ps -o stat= -p $pid 2>/dev/null) || continue
    [[ $st == T* ]] && continue
    kill -STOP $pid 2>/dev/null && echo $pid >> $STOPPED
  done
  sleep 0.5
done
for pid in $(sort -u $STOPPED); do kill -CONT $pid 2>/dev/null; done
wait $MAIN; status=$?
echo "exit $status (resumed $(sort -u $STOPPED | wc -l) processes)"
rm -f $STOPPED
exit $status
