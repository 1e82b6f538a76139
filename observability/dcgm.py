"""The DCGM fields Tandem collects, as dcgm-exporter's metrics CSV.

Pure: the Observability component (standalone dcgm-exporter) and the GPU operator's values
(components/gpu_pools/gpu_software.py) both ship this one list, so the FinOps rules see the same series
whichever runs the exporter.
"""

from __future__ import annotations

from observability import promql

# dcgm-exporter collectors: (field, Prometheus type, help). Profiling (DCP) fields need a
# datacenter GPU and DCGM's profiling module; they are what utilization is measured by.
DCGM_FIELDS = (
    (promql.GR_ENGINE_ACTIVE, "gauge", "Ratio of time the graphics engine is active"),
    (promql.SM_ACTIVE, "gauge", "Ratio of cycles an SM has at least one warp assigned"),
    (promql.SM_OCCUPANCY, "gauge", "Ratio of warps resident to the theoretical maximum"),
    (promql.TENSOR_ACTIVE, "gauge", "Ratio of cycles the tensor pipe is active"),
    (promql.DRAM_ACTIVE, "gauge", "Ratio of cycles the memory interface is busy"),
    (promql.FB_USED, "gauge", "Framebuffer memory used (MiB)"),
    (promql.FB_FREE, "gauge", "Framebuffer memory free (MiB)"),
    (promql.POWER, "gauge", "Power draw (W)"),
    (promql.XID, "gauge", "Value of the last XID error"),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (C)"),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (coarse, for comparison)"),
)


def dcgm_metrics_csv() -> str:
    return "".join(f"{name}, {kind}, {help_}.\n" for name, kind, help_ in DCGM_FIELDS)
