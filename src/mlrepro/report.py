"""The environment report: what a run ran on, and how the installed packages differ from the lock.

    mlrepro env            # text
    mlrepro env --json     # the same facts as JSON

`collect()` returns the facts as a JSON-able dict; run records embed it, and
verify_gpu prints a flat digest of it (`summarize`). It covers:

- OS and version, CPU model, machine architecture, and whether Python runs
  translated under Rosetta 2 (the usual reason MPS is missing on an M-chip Mac);
- Python's version and build;
- every package of the host's lock, the installed version beside the locked one,
  and the drift: missing, different and extra packages;
- TensorFlow's devices and whether the Metal plugin loaded; torch's MPS and CUDA
  status, with the likely reason when MPS is unavailable.

Which lock is the reference: the environment is taken to be built from the test
lock when every test-only package (in the test lock but not in the runtime lock)
is installed, and from the runtime lock otherwise. Drift is computed against
that lock, so the test environment reports none. An installed package counts as
extra when the reference lock does not name it. Two are never extra: mlrepro
itself, installed from the working tree, and pip, which conda or venv provide.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from mlrepro import __version__, devices, locking

# Installed but never "extra": the project itself, and the installer that conda's
# `pip` dependency or the venv module provide.
NOT_LOCKED = {"mlrepro", "pip"}

# The distributions whose versions verify_gpu reports; TensorFlow's name depends on the platform.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-macos")
FRAMEWORK_DISTRIBUTIONS = ("tensorflow-metal", "keras", "torch", "torchvision", "transformers", "datasets")

# torch 2.9 and later support MPS on macOS 14 (Sonoma) or newer only, as stated in
# https://github.com/pytorch/pytorch/pull/162921.
MPS_MIN_MACOS = (14, 0)
MPS_MIN_MACOS_SINCE_TORCH = (2, 9)


def collect(include_frameworks: bool = True) -> dict:
    """Collect the environment report as a JSON-able dict.

    With include_frameworks=False, TensorFlow and torch are not imported, so the
    device sections are left out. Versions still come from package metadata.
    """
    if include_frameworks:
        # Importing either framework imports setuptools, which appends its _vendor
        # folder to sys.path. Reading the packages afterwards, as verify-gpu and the
        # run records do, makes all three report the same drift.
        import_frameworks()
    installed = installed_versions()
    facts = {
        "os": os_facts(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "rosetta": locking.is_rosetta(),
        "mlrepro": __version__,
        "python": python_facts(),
        "versions": framework_versions(installed),
        **lock_report(installed),
    }
    if include_frameworks:
        # TensorFlow first: importing it before torch is the order known to work.
        facts["tensorflow"] = tensorflow_facts(installed)
        facts["torch"] = torch_facts()
        facts["accelerators"] = accelerators(facts)
        facts["cpu_only"] = not facts["accelerators"]
    return facts


# ----------------------------------------------------------------------------
# System and Python


def os_facts() -> dict:
    """Return the OS name, kernel release and a readable name with the version (macOS 14.5, Debian 12)."""
    if sys.platform == "darwin":
        mac_version = platform.mac_ver()[0]
        name = f"macOS {mac_version}" if mac_version else "macOS (version unknown)"
    elif sys.platform.startswith("linux"):
        try:
            name = platform.freedesktop_os_release().get("PRETTY_NAME", "Linux")
        except OSError:
            name = "Linux (no /etc/os-release)"
    else:
        name = f"{platform.system()} {platform.version()}"
    return {"system": platform.system(), "release": platform.release(), "name": name}


def cpu_model() -> str:
    """Return the CPU's marketing name, or platform.processor() when the OS does not tell."""
    if sys.platform == "darwin":
        result = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, check=False
        )
        if result.stdout.strip():
            return result.stdout.strip()
    elif sys.platform.startswith("linux"):
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
        # x86 has "model name"; many Arm kernels give only "Hardware" or nothing readable.
        for key in ("model name", "Hardware"):
            for line in cpuinfo.splitlines():
                field, _, value = line.partition(":")
                if field.strip() == key and value.strip():
                    return value.strip()
    return platform.processor() or "unknown"


def python_facts() -> dict:
    """Return Python's version and build. `platform` is the build's target, such as macosx-11.0-arm64."""
    build_number, build_date = platform.python_build()
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "build": f"{build_number}, {build_date}",
        "compiler": platform.python_compiler(),
        "platform": sysconfig.get_platform(),
        "executable": sys.executable,
        "prefix": sys.prefix,
    }


# ----------------------------------------------------------------------------
# Locked and installed packages


def installed_versions() -> dict[str, str]:
    """Return {normalized name: version} of every importable distribution; the first on sys.path wins."""
    versions: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        if is_vendored(distribution):
            continue
        name = distribution.metadata["Name"]
        if name:
            versions.setdefault(locking.normalize_name(name), distribution.version)
    return versions


def is_vendored(distribution: importlib.metadata.Distribution) -> bool:
    """Return True for a package's private copy of another distribution, such as setuptools/_vendor/zipp.

    Importing torch or TensorFlow imports setuptools, which appends its _vendor
    folder to sys.path. The dozen distributions there (zipp, tomli, jaraco.*)
    belong to setuptools, not to the environment. Only the folder that contains
    the .dist-info counts, so an environment under a folder named _vendor is still read.
    """
    return Path(str(distribution.locate_file(""))).name == "_vendor"


def framework_versions(installed: dict[str, str]) -> dict[str, str | None]:
    """Return the versions of Python and the ML stack, with None for a package that is not installed."""
    tensorflow = next((installed[name] for name in TENSORFLOW_DISTRIBUTIONS if name in installed), None)
    versions = {"python": platform.python_version(), "tensorflow": tensorflow}
    for name in FRAMEWORK_DISTRIBUTIONS:
        versions[name] = installed.get(name)
    return versions


def reference_role(platform_name: str, installed: dict[str, str]) -> str:
    """Return "test" when every test-only package of the host's test lock is installed, else "runtime"."""
    runtime_path = locking.lock_path(platform_name, "runtime")
    test_path = locking.lock_path(platform_name, "test")
    if not test_path.exists():
        return "runtime"
    test_only = set(locking.pinned_versions(test_path)) - set(locking.pinned_versions(runtime_path))
    if test_only and test_only <= set(installed):
        return "test"
    return "runtime"


def lock_drift(locked: dict[str, str], installed: dict[str, str]) -> dict[str, list]:
    """Return the missing, different and extra packages. Both dicts map normalized names to versions."""
    missing = sorted(name for name in locked if name not in installed)
    different = [
        {"name": name, "locked": version, "installed": installed[name]}
        for name, version in sorted(locked.items())
        if name in installed and installed[name] != version
    ]
    extra = [
        {"name": name, "installed": version}
        for name, version in sorted(installed.items())
        if name not in locked and name not in NOT_LOCKED
    ]
    return {"missing": missing, "different": different, "extra": extra}


def lock_report(installed: dict[str, str]) -> dict:
    """Return the `lock`, `packages` and `drift` sections of the report.

    When this machine has no lock (an x86_64 Python on a Mac, an unsupported
    platform, a lock not yet written), `lock` carries the error and `drift` is None.
    """
    try:
        platform_name = locking.host_platform()
        role = reference_role(platform_name, installed)
        path = locking.lock_path(platform_name, role)
        locked = locking.pinned_versions(path)
    except (locking.LockError, OSError) as error:
        return {"lock": {"error": str(error)}, "packages": {}, "drift": None}

    lock = {
        "platform": platform_name,
        "role": role,
        "path": display_path(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    packages = {
        name: {"locked": version, "installed": installed.get(name)}
        for name, version in sorted(locked.items())
    }
    return {"lock": lock, "packages": packages, "drift": lock_drift(locked, installed)}


def display_path(path: Path) -> str:
    try:
        return str(path.relative_to(locking.ROOT))
    except ValueError:
        return str(path)


def drift_count(drift: dict | None) -> int:
    return sum(len(entries) for entries in drift.values()) if drift else 0


# ----------------------------------------------------------------------------
# Frameworks and devices


def import_frameworks() -> None:
    """Import TensorFlow, then torch (the order known to work), skipping one that is not installed."""
    for module in ("tensorflow", "torch"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass


def tensorflow_facts(installed: dict[str, str]) -> dict:
    """Return TensorFlow's version, build, physical devices and whether the Metal plugin loaded."""
    try:
        import tensorflow as tf
    except ImportError as error:
        return {"version": None, "error": f"cannot import tensorflow: {error}"}

    build = tf.sysconfig.get_build_info()
    physical_devices = tf.config.list_physical_devices()
    devices_listed = [{"name": device.name, "device_type": device.device_type} for device in physical_devices]
    gpus = devices.tensorflow_gpus()
    gpu_details = [
        tf.config.experimental.get_device_details(device)
        for device in physical_devices
        if device.device_type == "GPU"
    ]
    metal_version = installed.get("tensorflow-metal")
    return {
        "version": tf.__version__,
        "cuda_build": bool(build.get("is_cuda_build", False)),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "devices": devices_listed,
        "gpus": gpus,
        "gpu_names": [str(details.get("device_name", "")) for details in gpu_details],
        "metal_plugin": {
            "installed": metal_version,
            # tensorflow-metal registers its GPU as a "GPU" PluggableDevice, so with
            # no GPU listed, the plugin failed to load.
            "loaded": metal_version is not None and bool(gpus),
        },
    }


def torch_facts() -> dict:
    """Return torch's version, MPS status (with the reason when unavailable) and CUDA devices."""
    try:
        import torch
    except ImportError as error:
        return {"version": None, "error": f"cannot import torch: {error}"}

    mps = devices.mps_status()
    mps["reason"] = None if mps["available"] else mps_unavailable_reason()
    cuda = devices.cuda_status()
    cuda["cudnn_version"] = torch.backends.cudnn.version() if cuda["available"] else None
    cuda["capabilities"] = [
        ".".join(map(str, torch.cuda.get_device_capability(index))) for index in range(len(cuda["devices"]))
    ]
    return {"version": torch.__version__, "mps": mps, "cuda": cuda}


def mps_unavailable_reason() -> str:
    """Return the likely reason torch cannot use MPS here, checking the root causes first."""
    import torch

    if sys.platform != "darwin":
        return f"not macOS: MPS is Apple's Metal backend, and this is {sys.platform}"
    if locking.is_rosetta():
        return (
            "x86_64 Python under Rosetta 2: MPS needs an arm64 Python on an M-chip Mac; "
            "install an arm64 Python (for example Miniforge's arm64 installer)"
        )
    if platform.machine() == "x86_64":
        return "x86_64 (Intel) Mac: mlrepro's locks cover Apple silicon (osx-arm64) only"
    if not torch.backends.mps.is_built():
        return (
            "this torch build has no MPS support (torch.backends.mps.is_built() is False); "
            "reinstall torch from the lock (nox rebuilds the environment when the lock changes)"
        )
    mac_version = platform.mac_ver()[0]
    too_old = mac_version and parse_version(mac_version) < MPS_MIN_MACOS
    if too_old and parse_version(torch.__version__) >= MPS_MIN_MACOS_SINCE_TORCH:
        return (
            f"macOS {mac_version} is older than {format_version(MPS_MIN_MACOS)}, which torch "
            f"{format_version(MPS_MIN_MACOS_SINCE_TORCH)} and later need for MPS; update macOS"
        )
    return (
        "unknown: torch is built with MPS on an arm64 macOS that is new enough, but no Metal device is "
        "usable (a virtual machine without GPU access can cause this)"
    )


def parse_version(text: str) -> tuple[int, ...]:
    """Return the leading numeric parts of a version string: "2.11.0+cu130" -> (2, 11, 0), "" -> ()."""
    match = re.match(r"\d+(\.\d+)*", text)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def format_version(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def accelerators(facts: dict) -> list[str]:
    """Return every GPU that TensorFlow or torch can use, as "tensorflow:<device>" or "torch:<device>"."""
    found = [f"tensorflow:{name}" for name in facts["tensorflow"].get("gpus", [])]
    torch_section = facts["torch"]
    if torch_section.get("cuda", {}).get("available"):
        found += [f"torch:cuda:{index}" for index in range(len(torch_section["cuda"]["devices"]))]
    if torch_section.get("mps", {}).get("available"):
        found.append("torch:mps")
    return found


# ----------------------------------------------------------------------------
# Rendering


def summarize(facts: dict) -> dict:
    """Flatten the report into the one-level fields that verify_gpu's summary prints."""
    summary = {f"{name.replace('-', '_')}_version": version for name, version in facts["versions"].items()}
    summary.update(
        os=facts["os"]["name"],
        cpu=facts["cpu"],
        machine=facts["machine"],
        rosetta=facts["rosetta"],
        python_build=facts["python"]["build"],
        lock=facts["lock"].get("path", facts["lock"].get("error")),
        lock_sha256=facts["lock"].get("sha256"),
        lock_drift=drift_count(facts["drift"]) if facts["drift"] is not None else None,
    )
    if "tensorflow" in facts:
        tensorflow, torch = facts["tensorflow"], facts["torch"]
        summary.update(
            tensorflow_devices=[device["name"] for device in tensorflow.get("devices", [])],
            metal_plugin_loaded=tensorflow.get("metal_plugin", {}).get("loaded", False),
            torch_mps_built=torch.get("mps", {}).get("built"),
            torch_mps_available=torch.get("mps", {}).get("available"),
            torch_mps_reason=torch.get("mps", {}).get("reason"),
            torch_cuda_version=torch.get("cuda", {}).get("version"),
            torch_cuda_devices=torch.get("cuda", {}).get("devices"),
            accelerators=facts["accelerators"],
        )
    return summary


def render_json(facts: dict) -> str:
    return json.dumps(facts, indent=2, default=str)


def render_text(facts: dict, packages: bool = True) -> str:
    """Format the report for a terminal: system, Python, lock and drift, devices, then every package.

    packages=False leaves out the table of every locked package, but the drift is still listed.
    """
    lines = ["System"]
    lines.append(f"  OS:            {facts['os']['name']} ({facts['os']['system']} {facts['os']['release']})")
    lines.append(f"  CPU:           {facts['cpu']}")
    lines.append(f"  machine:       {facts['machine']}")
    lines.append(f"  Rosetta 2:     {'yes, this Python is translated x86_64' if facts['rosetta'] else 'no'}")

    python = facts["python"]
    lines.append("Python")
    build = f"{python['implementation']}, {python['build']}, {python['compiler']}"
    lines.append(f"  version:       {python['version']} ({build})")
    lines.append(f"  platform:      {python['platform']}")
    lines.append(f"  executable:    {python['executable']}")
    lines.append(f"  mlrepro:       {facts['mlrepro']}")

    lines += render_lock(facts)
    if "tensorflow" in facts:
        lines += render_devices(facts)
    if packages:
        lines += render_packages(facts["packages"])
    return "\n".join(lines)


def render_lock(facts: dict) -> list[str]:
    lock, drift = facts["lock"], facts["drift"]
    lines = ["Lock"]
    if "error" in lock:
        return lines + [f"  unavailable:   {lock['error']}"]
    lines.append(f"  file:          {lock['path']} ({lock['role']} lock for {lock['platform']})")
    lines.append(f"  sha256:        {lock['sha256']}")
    if not drift_count(drift):
        lines.append(f"  drift:         none ({len(facts['packages'])} packages as locked)")
        return lines
    lines.append(f"  drift:         {drift_count(drift)} package(s)")
    for name in drift["missing"]:
        lines.append(f"    missing:     {name} (locked {facts['packages'][name]['locked']})")
    for entry in drift["different"]:
        lines.append(f"    different:   {entry['name']} {entry['installed']} (locked {entry['locked']})")
    for entry in drift["extra"]:
        lines.append(f"    extra:       {entry['name']} {entry['installed']} (not in the lock)")
    return lines


def render_devices(facts: dict) -> list[str]:
    tensorflow, torch = facts["tensorflow"], facts["torch"]
    lines = ["TensorFlow"]
    if tensorflow.get("version") is None:
        lines.append(f"  {tensorflow['error']}")
    else:
        metal = tensorflow["metal_plugin"]
        if metal["installed"] is None:
            metal_line = "not installed"
        elif metal["loaded"]:
            metal_line = f"{metal['installed']}, loaded"
        else:
            metal_line = f"{metal['installed']}, installed but TensorFlow lists no GPU"
        cuda_line = f"CUDA {tensorflow['cuda_version']}" if tensorflow["cuda_build"] else "no CUDA"
        lines.append(f"  version:       {tensorflow['version']} ({cuda_line})")
        lines.append(f"  devices:       {', '.join(device['name'] for device in tensorflow['devices'])}")
        lines.append(f"  GPUs:          {', '.join(tensorflow['gpus']) or 'none'}")
        lines.append(f"  Metal plugin:  {metal_line}")

    lines.append("torch")
    if torch.get("version") is None:
        lines.append(f"  {torch['error']}")
    else:
        mps, cuda = torch["mps"], torch["cuda"]
        lines.append(f"  version:       {torch['version']}")
        mps_line = f"built {yes_no(mps['built'])}, available {yes_no(mps['available'])}"
        lines.append(f"  MPS:           {mps_line}" + (f" ({mps['reason']})" if mps["reason"] else ""))
        if cuda["available"]:
            gpus = zip(cuda["devices"], cuda["capabilities"])
            names = ", ".join(f"{name} (compute capability {capability})" for name, capability in gpus)
            lines.append(f"  CUDA:          {cuda['version']}, cuDNN {cuda['cudnn_version']}: {names}")
        else:
            built = f"built for CUDA {cuda['version']}" if cuda["version"] else "built without CUDA"
            lines.append(f"  CUDA:          not available ({built}, no device)")

    lines.append(f"Accelerators:    {', '.join(facts['accelerators']) or 'none (CPU only)'}")
    return lines


def render_packages(packages: dict[str, dict]) -> list[str]:
    if not packages:
        return []
    name_width = max(len(name) for name in packages)
    version_width = max(len("locked"), *(len(versions["locked"]) for versions in packages.values()))
    header = f"  {'name':<{name_width}}  {'locked':<{version_width}}  installed"
    lines = [f"Packages ({len(packages)} locked)", header]
    for name, versions in packages.items():
        installed = versions["installed"] or "MISSING"
        marker = "" if versions["installed"] == versions["locked"] else "  <- drift"
        lines.append(f"  {name:<{name_width}}  {versions['locked']:<{version_width}}  {installed}{marker}")
    return lines


def yes_no(value: bool) -> str:
    return "yes" if value else "no"
