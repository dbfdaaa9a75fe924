"""Runs the quick study once per test session, killed mid-sweep and resumed, so the study test and the notebook
test share one run (it is the slowest thing in the suite)."""
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CACHE = {}


def study_command(out):
  return [sys.executable, os.path.join(ROOT, "scripts", "study.py"), "--flagfile=flags/quick.cfg", f"--out={out}"]


def run_quick_study():
  """Returns {"out", "killed_after" (finished runs when killed), "killed_log" (its output), "survivors" (pids of
  its processes alive after the kill), "resume" (CompletedProcess), "again"}."""
  if "out" in _CACHE:
    return _CACHE
  out = tempfile.mkdtemp(prefix="transfusion_quick_")
  killed_log = os.path.join(tempfile.mkdtemp(prefix="transfusion_quick_log_"), "killed.log")
  log = open(killed_log, "w")
  proc = subprocess.Popen(study_command(out), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 900
  finished = []
  while time.time() < deadline and proc.poll() is None:
    finished = glob.glob(os.path.join(out, "runs", "*", "*", "*", "result.json"))
    if len(finished) >= 2:
      break
    time.sleep(0.2)
  if proc.poll() is None:
    proc.send_signal(signal.SIGKILL)
  proc.wait()
  log.close()
  # The default --parallel_runs=auto trains in 2 processes on 2 cores: its children must die with the parent.
  survivors = []
  for _ in range(10):
    time.sleep(0.5)
    survivors = subprocess.run(["pgrep", "-f", f"--out={out}"], capture_output=True, text=True).stdout.split()
    if not survivors:
      break
  resume = subprocess.run(study_command(out), cwd=ROOT, capture_output=True, text=True, timeout=1500)
  again = subprocess.run(study_command(out), cwd=ROOT, capture_output=True, text=True, timeout=600)
  _CACHE.update(out=out, killed_after=len(finished), killed_log=open(killed_log).read(), survivors=survivors,
                resume=resume, again=again)
  return _CACHE
