from pathlib import Path

from xaibench.report import provenance
from xaibench.report.provenance import Provenance, RunFacts


def _facts(**kw) -> RunFacts:
    base = dict(
        name="tiny", benchmark="tiny", config="../benchmarks/tiny.toml", config_hash="0123456789abcdef", identity="x",
        dataset="rooftops", models=["smp_unet"], rows=12, device="cpu", finished="2026-12-02T10:00:00+0000",
        description="a tiny grid --> with an arrow", versions={"xaibench": "0.1.0", "torch": "2.14.1", "xaibench-weaksup": "0.2.0"},
    )
    return RunFacts(**{**base, **kw})


def test_the_footer_reads_back_and_says_what_made_the_file():
    prov = Provenance("xaibench leaderboard: tiny", [_facts()])
    text = "# board\n\nbody\n\n" + provenance.render(prov, Path("leaderboard/tiny.md"))
    assert provenance.read(text) == prov  # a description with "-->" does not end the comment early
    section = text[text.index("## Provenance"):]
    for shown in ("`0123456789ab`", "0.1.0", "xaibench-weaksup 0.2.0", "2.14.1", "cpu", "[`tiny.toml`](../benchmarks/tiny.toml)"):
        assert shown in section
    assert "xaibench leaderboard --check leaderboard/tiny.md" in section
    assert "xaibench leaderboard --all --only tiny --dir leaderboard" in section
    assert "xaibench run benchmarks/tiny.toml --out runs/tiny" in section
    assert provenance.body(text) == "# board\n\nbody\n\n"


def test_no_footer_or_a_broken_one_reads_as_none():
    assert provenance.read("# board\n") is None
    assert provenance.read("<!-- xaibench-provenance {\"runs\": 3} -->") is None


def test_merged_runs_have_one_line_each_and_the_raw_commands():
    prov = Provenance("merged", [_facts(), _facts(name="theirs", config="../benchmarks/theirs.toml")])
    section = provenance.render(prov, Path("leaderboard/merged.md"))
    assert "| tiny |" in section and "| theirs |" in section
    assert "--all" not in section
    assert "xaibench leaderboard runs/tiny runs/theirs --output leaderboard/merged.md" in section


def test_the_cpu_is_shown_beside_the_device_and_old_footers_without_it_still_read():
    prov = Provenance("t", [_facts(cpu="AMD EPYC, AVX2")])
    section = provenance.render(prov, Path("leaderboard/tiny.md"))
    assert "| cpu (AMD EPYC, AVX2) |" in section and provenance.read(section) == prov
    old = section.replace(', "cpu": "AMD EPYC, AVX2"', "")
    assert '"cpu": "AMD' not in old and provenance.read(old).runs[0].cpu == ""


def test_the_pinned_kernel_instruction_set_is_shown_beside_the_cpu():
    prov = Provenance("t", [_facts(cpu="AMD EPYC, AVX2", cpu_isa="ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2")])
    section = provenance.render(prov, Path("leaderboard/tiny.md"))
    assert "| cpu (AMD EPYC, AVX2; ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2) |" in section
    assert provenance.read(section) == prov
