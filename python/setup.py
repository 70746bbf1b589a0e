"""The xfer Python package: libxfer's API as Python objects.

Built with cffi in API mode against the installed libxfer: pkg-config
finds its header and library, and xfer/_build.py derives every declaration
from that header, so nothing here is a copy that can drift (docs/python.md,
"Building").
"""
from setuptools import setup

setup(
    name="xfer",
    version="0.1.0",
    description="One-sided data transfer between processes (libxfer)",
    packages=["xfer"],
    python_requires=">=3.9",
    install_requires=["cffi>=1.15"],
    setup_requires=["cffi>=1.15"],
    cffi_modules=["xfer/_build.py:ffibuilder"],
    zip_safe=False,
)
