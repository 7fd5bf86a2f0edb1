"""Procedural synthetic chest radiographs with radiology reports (the embedded demo dataset).

A smoke-test and teaching dataset, not a clinical benchmark: see ``docs/synthetic.md``.
"""

from medvl.data.synthetic.findings import (
    BASE_FINDINGS,
    FINDINGS,
    NOVEL_FINDINGS,
    SEVERITY_GRADES,
    Finding,
    overall_severity_grade,
)
from medvl.data.synthetic.generator import (
    GENERATOR_VERSION,
    SynthConfig,
    SyntheticCase,
    build_records,
    encode_png,
    generate_dataset,
    plan_records,
    render_case,
    sample_case,
    summarise,
    synthetic_tasks,
)
from medvl.data.synthetic.reports import Report, Sentence, write_report

__all__ = [
    "BASE_FINDINGS",
    "FINDINGS",
    "GENERATOR_VERSION",
    "NOVEL_FINDINGS",
    "SEVERITY_GRADES",
    "Finding",
    "Report",
    "Sentence",
    "SynthConfig",
    "SyntheticCase",
    "build_records",
    "encode_png",
    "generate_dataset",
    "overall_severity_grade",
    "plan_records",
    "render_case",
    "sample_case",
    "summarise",
    "synthetic_tasks",
    "write_report",
]
