"""Writes the Colab notebooks in colab/ (outputs stripped). Run: python tools/make_notebooks.py"""
import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INSTALL = '''# Colab: install the package from the checkout this notebook sits in (TensorFlow is already there). Opened from
# GitHub or uploaded alone, there is no checkout: set TRANSFUSION_TF_REPO to the URL of your clone or fork, e.g.
#   os.environ["TRANSFUSION_TF_REPO"] = "https://github.com/YOU/transfusion_tf"
# and run this cell again; it is cloned to /content/transfusion_tf.
import os, subprocess, sys
if "google.colab" in sys.modules:
    here = os.getcwd()
    checkout = next((d for d in (here, os.path.dirname(here), "/content/transfusion_tf")
                     if os.path.exists(os.path.join(d, "setup.py")) and os.path.isdir(os.path.join(d, "transfusion_tf"))),
                    None)
    if checkout is None:
        REPO_URL = os.environ.get("TRANSFUSION_TF_REPO")
        if not REPO_URL:
            raise SystemExit("no transfusion_tf checkout next to this notebook: set TRANSFUSION_TF_REPO to your "
                             "clone's URL (see the comment above) and run this cell again")
        checkout = "/content/transfusion_tf"
        subprocess.run(["git", "clone", "--depth=1", REPO_URL, checkout], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", checkout], check=True)
    os.chdir(checkout)'''

FIND_ROOT = '''import os
# The repository root holds flags/quick.cfg; notebooks run from colab/ locally and from the clone on Colab.
root = os.getcwd()
while not os.path.exists(os.path.join(root, "flags", "quick.cfg")) and os.path.dirname(root) != root:
    root = os.path.dirname(root)
os.chdir(root)
print("repository root:", root)'''

RUN_QUICK = '''import subprocess, sys
# The quick study (flags/quick.cfg): a few minutes on a 2-core CPU. A finished one in OUT is reused (the study would
# find it finished and train nothing); delete OUT to run it afresh.
OUT = os.environ.get("TRANSFUSION_QUICK_OUT", "/tmp/transfusion_quick")
if os.path.exists(os.path.join(OUT, "report.md")):
    print("reusing the finished quick study in", OUT)
else:
    proc = subprocess.run([sys.executable, "scripts/study.py", "--flagfile=flags/quick.cfg", f"--out={OUT}"],
                          capture_output=True, text=True)
    print(proc.stdout[-2000:])
    assert proc.returncode == 0, proc.stderr[-2000:]'''


def quickstart():
  return [
      new_markdown_cell("# transfusion_tf quickstart\n\nTrain two small models on the embedded synthetic retina task "
                        "(one from random init, one from weights pretrained on the synthetic source task that stands "
                        "in for ImageNet offline), then compare their representations with SVCCA."),
      new_code_cell(INSTALL),
      new_code_cell(FIND_ROOT),
      new_code_cell('''import tempfile
from transfusion_tf.training import trainer
WORK = os.environ.get("TRANSFUSION_NB_WORK") or tempfile.mkdtemp(prefix="transfusion_quickstart_")
common = dict(model="cbr_tiny", dataset="synthetic_retina", image_size=32, batch_size=16, train_steps=40,
              eval_every=20, model_kwargs={"width_multiplier": 0.5},
              data_kwargs={"num_train": 512, "num_val": 256, "num_test": 256})
# Pretrain on the synthetic source task (stands in for ImageNet: no ImageNet weights offline).
source = trainer.pretrain(trainer.TrainConfig(**dict(common, dataset="synthetic_source",
                                                   data_kwargs={"num_train": 512, "num_val": 128, "num_test": 64})),
                          os.path.join(WORK, "pretrain"))
runs = {}
for init in ("random", "pretrained"):
    cfg = trainer.TrainConfig(**common, init=init, weights=source if init == "pretrained" else None)
    runs[init] = os.path.join(WORK, init)
    result = trainer.train(cfg, runs[init])
    print(init, "best referable AUC", round(result["best"]["auc_referable"], 3))'''),
      new_code_cell('''from transfusion_tf.analysis import activations
from transfusion_tf.experiments import study
from transfusion_tf.training import rundir
from transfusion_tf.data import pipeline
a, _ = rundir.load_run_model(runs["random"])
b, _ = rundir.load_run_model(runs["pretrained"])
data = pipeline.build_data("synthetic_retina", image_size=32, batch_size=32, model_name="cbr_tiny",
                           num_train=512, num_val=256, num_test=256)
batches = [x for x, _, _ in data.eval("validation")]
stages = ["conv1", "conv2", "conv3", "conv4"]
sims = activations.compare_models(a, b, stages, batches, conv_mode="avgpool")
for s in stages:
    print(f"{s}: SVCCA {sims[s]['svcca']:.3f}  CKA {sims[s]['cka']:.3f}  ({sims[s]['datapoints']} datapoints)")'''),
      new_code_cell('''%matplotlib inline
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(5, 3.2))
for init, d in runs.items():
    curve = rundir.read_json(os.path.join(d, "curve.json"))
    ax.plot([p["step"] for p in curve], [p["auc_referable"] for p in curve], marker="o", label=init)
ax.set_xlabel("step"); ax.set_ylabel("validation referable AUC"); ax.legend(); plt.show()'''),
  ]


def representations():
  return [
      new_markdown_cell("# Representations: the paper's figures 2-5 on the quick study\n\nRuns `flags/quick.cfg` "
                        "(synthetic retina, CBR-Tiny and a narrow ResNet50) and shows F2-F5."),
      new_code_cell(INSTALL), new_code_cell(FIND_ROOT), new_code_cell(RUN_QUICK),
      new_code_cell('''import json
from IPython.display import Image, display
for fig in ("f2", "f3", "f4", "f5"):
    path = os.path.join(OUT, "analysis", fig + ".png")
    print(fig.upper(), path)
    display(Image(filename=path))'''),
      new_code_cell('''f4 = json.load(open(os.path.join(OUT, "analysis", "f4.json")))
for p in f4["panels"]:  # One fit per model, stage and pair kind (random-random, random-pretrained).
    print(p["model"], p["stage"], p["pair_kind"], "R2", p["r2"], "95% CI", p["r2_ci"], "pairs", p["pairs"])'''),
  ]


def weight_transfusion():
  return [
      new_markdown_cell("# Mean-Var init and weight transfusion on the quick study\n\nConvergence curves for random, "
                        "Mean-Var and transfer (MV), and for transfusing the lowest stages only (WT)."),
      new_code_cell(INSTALL), new_code_cell(FIND_ROOT), new_code_cell(RUN_QUICK),
      new_code_cell('''import glob
from IPython.display import Image, Markdown, display
for path in sorted(glob.glob(os.path.join(OUT, "analysis", "mv_*.png")) + glob.glob(os.path.join(OUT, "analysis", "wt_*.png"))):
    print(os.path.basename(path))
    display(Image(filename=path))'''),
      new_code_cell('''report = open(os.path.join(OUT, "report.md")).read()
start = report.index("## Convergence: steps to threshold")
display(Markdown(report[start:report.index("## ", start + 3)]))'''),
  ]


def main():
  for name, cells in (("quickstart", quickstart()), ("representations", representations()),
                      ("weight_transfusion", weight_transfusion())):
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, os.path.join(ROOT, "colab", f"{name}.ipynb"))


if __name__ == "__main__":
  main()
