"""transfusion_tf: reproduce and extend "Transfusion: Understanding Transfer Learning for Medical Imaging".

TensorFlow comes through an extra so the user picks the wheel:
  pip install -e ".[cpu]"   tensorflow-cpu (about 270 MB), for laptops and CI
  pip install -e ".[gpu]"   tensorflow[and-cuda], for NVIDIA GPUs
  pip install -e ".[tf]"    plain tensorflow (e.g. macOS)
"""
from setuptools import find_packages, setup

TF = "2.16"  # First release on Keras 3.

setup(
    name="transfusion_tf",
    version="0.1.0",
    description="Transfer learning for medical imaging, reproduced: models, init schemes, SVCCA, weight transfusion.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["transfusion_tf", "transfusion_tf.*"]),
    install_requires=[
        "keras>=3.0",
        "tensorflow-datasets>=4.9.10",
        "importlib_resources>=5.0",
        "tensorboard>=2.16",
        "numpy>=1.26",
        "scipy>=1.11",
        "absl-py>=2.0",
        "matplotlib>=3.7",
        "h5py>=3.10",
        "pillow>=10.0",
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu>={TF}"],
        "gpu": [f"tensorflow[and-cuda]>={TF}"],
        "tf": [f"tensorflow>={TF}"],
        "test": ["pytest>=7.4", "pytest-xdist>=3.5", "nbclient>=0.9", "nbformat>=5.9", "ipykernel>=6.25"],
    },
    entry_points={
        "console_scripts": [
            "transfusion-models=transfusion_tf.cli.models:run",
            "transfusion-train=transfusion_tf.cli.train:run",
            "transfusion-evaluate=transfusion_tf.cli.evaluate:run",
            "transfusion-pretrain=transfusion_tf.cli.pretrain:run",
            "transfusion-compare=transfusion_tf.cli.compare:run",
            "transfusion-study=transfusion_tf.cli.study:run",
        ],
    },
)
