"""The csrc extension (cuBLASLt and cuSPARSELt GEMMs): how it is built and its ops.

:mod:`~slidesparse.native.extension` is the only module that knows ``csrc/`` and how to build
it; :mod:`~slidesparse.native.ops` defines every op's schema, typed wrapper and fake.
"""

__all__ = ["extension", "ops"]
