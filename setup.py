from pathlib import Path

from setuptools import find_packages, setup

TRAINING = [
    "accelerate>=1.0",
    "datasets>=3.0",
    "opencv-python-headless>=4.8",
    "scipy>=1.11",
    "tensorboard>=2.14",
]

setup(
    name="iter-diffusers",
    version="0.1.0",
    description=(
        "ITER (Iterative Token Evaluation and Refinement, AAAI 2024) real-world super-resolution "
        "as a Hugging Face diffusers pipeline"
    ),
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0 (code); converted official weights are CC BY-NC-SA 4.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"iter_diffusers": ["data/*.npz", "data/*.md", "data/*.png", "pretrained/*/*.json", "pretrained/*/*.md",
                                     "pretrained/*/*.png", "pretrained/*/*.py", "pretrained/*/*/*"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "diffusers>=0.42",
        "safetensors>=0.4",
        "huggingface-hub>=0.34",
        "numpy>=1.24",
        "pillow>=10.0",
        "tqdm>=4.60",
        "accelerate>=1.0",  # fast, quiet loading (diffusers warns at every load without it); several processes
        "transformers>=4.46",  # CLIP-IQA in iter-sr-eval
        "requests>=2.28",  # downloads of the official weights
        "filelock>=3.0",  # one download / conversion of the official weights at a time
    ],
    extras_require={
        "training": TRAINING,
        "test": TRAINING + ["pytest>=8", "scikit-image>=0.22", "selenium>=4.10"],
        # iter-sr-app, the web demo. Every gradio release (6.31, the newest, included) requires pillow<13, so this
        # extra moves an installed Pillow 13 back to 12.x; nothing of ours caps Pillow (the rest works with 13).
        "app": ["gradio>=6.0"],
        # --engine openvino: exact fp32, faster than torch's; with NNCF, --dtype int8 (the auto choice on CPUs
        # without native bf16)
        "openvino": ["openvino>=2025.1", "nncf>=3.0"],
    },
    entry_points={
        "console_scripts": [
            "iter-sr = iter_diffusers.cli.upscale:main",
            "iter-sr-eval = iter_diffusers.evaluation.cli:main",
            "iter-sr-app = iter_diffusers.app.cli:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Processing",
    ],
)
