"""The check of the golden digests on an emulated CPU without AVX-512 (benchmarks/bench_other_cpu.py).

QEMU itself is too slow for the test suite: a stand-in ``qemu-x86_64`` on PATH runs the command natively,
so these tests check what the script does around the emulator (the record, the outcomes it parses,
when it claims that the bytes are the same without AVX-512, and its refusals), not the emulation.
"""
import importlib.util
import json
import os
import stat
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "bench_other_cpu", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_other_cpu.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

NATIVE_QEMU = """#!/bin/sh
# stands in for qemu-x86_64: "--version", or "-cpu MODEL program args..." run natively
if [ "$1" = "--version" ]; then echo "qemu-x86_64 version 0.0 (native stand-in)"; exit 0; fi
shift 2
QEMU_STAND_IN=1 exec "$@"
"""


@pytest.fixture
def native_qemu(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "qemu-x86_64"
    fake.write_text(NATIVE_QEMU)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_without_qemu_it_says_what_to_install_and_writes_no_record(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-x86_64 there
    out = tmp_path / "other_cpu.json"
    assert bench.main(["--out", str(out)]) == 2
    assert "qemu-user" in capsys.readouterr().err
    assert not out.exists()


def test_the_record_claims_the_same_bytes_only_where_the_cpu_lacks_avx512(native_qemu):
    """One golden test (the 3D conv head: a few seconds) through the stand-in, i.e. on this CPU: the
    outcome is parsed per test, and the claim follows the CPU the process found, not the host's name."""
    out = native_qemu / "other_cpu.json"
    code = bench.main(["--out", str(out), "-k", "3d_conv"])
    record = json.loads(out.read_text())
    assert record["tests"] == {
        "tests/test_golden.py::test_a_3d_conv_fusion_head_trained_a_few_steps_is_the_same_everywhere": "passed"}
    found = record["emulated_cpu_found"]
    assert found["avx2"] and found["torch_cpu_capability_unpinned"] in ("AVX2", "AVX512")
    assert record["same_bytes_without_avx512"] is (not found["avx512f"])
    assert code == (0 if record["same_bytes_without_avx512"] else 1)
    assert record["emulator"].startswith("qemu-x86_64 version")


def test_a_run_in_which_no_golden_test_ran_proves_nothing(native_qemu):
    out = native_qemu / "other_cpu.json"
    assert bench.main(["--out", str(out), "-k", "no_such_test"]) == 1
    record = json.loads(out.read_text())
    assert record["tests"] == {} and record["same_bytes_without_avx512"] is False
    assert record["pytest_exit_code"] == 5  # pytest: no tests collected


#: Stand-ins for the tower training (benchmarks' _TOWER): digests that do or do not depend on running
#: "emulated" (under the stand-in), or a failure.
FAKE_TOWERS = {
    "same": 'import json; print(json.dumps({"seconds": 1.0, "digests": {"conv1.weight": "ab", "fc.bias": "cd"}}))',
    "differs": ('import json, os; print(json.dumps({"seconds": 1.0, "digests": {"conv1.weight": "ab", '
                '"fc.bias": "ef" if os.environ.get("QEMU_STAND_IN") else "cd"}}))'),
    "fails": 'raise SystemExit("no data set")',
}


@pytest.mark.parametrize("fake", FAKE_TOWERS)
def test_the_tower_trained_natively_and_emulated_is_compared_tensor_by_tensor(native_qemu, monkeypatch, fake):
    monkeypatch.setattr(bench, "_TOWER", FAKE_TOWERS[fake])
    out = native_qemu / "other_cpu.json"
    code = bench.main(["--out", str(out), "--tower", "demo_shallow-spatial", "--tower-epochs", "2", "-k", "3d_conv"])
    record = json.loads(out.read_text())
    tower = record["tower"]
    assert tower["name"] == "demo_shallow-spatial" and tower["epochs"] == 2
    assert tower["bitwise_equal"] is (fake == "same")
    assert tower["differing"] == {"same": [], "differs": ["fc.bias"], "fails": []}[fake]
    if fake == "fails":
        assert "no data set" in "\n".join(tower["native"]["error"])
    else:
        assert tower["native"]["digests"]["conv1.weight"] == tower["emulated"]["digests"]["conv1.weight"] == "ab"
    holds = fake == "same" and not record["emulated_cpu_found"]["avx512f"]  # the stand-in runs on this CPU
    assert record["same_bytes_without_avx512"] is holds and code == (0 if holds else 1)


def test_tower_names_and_epochs_are_checked(native_qemu, capsys):
    for bad in (["--tower", "demo_huge-spatial"], ["--tower", "demo_deep-spatial", "--tower-epochs", "0"]):
        with pytest.raises(SystemExit) as e:
            bench.main(["--out", str(native_qemu / "other_cpu.json"), *bad])
        assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
