"""Where a trial runs: `devices.trial_device` from Ray's GPU assignment, and what it says when a
card cannot be used. The Ray test runs a real local node that claims one GPU on this CPU-only
machine, so the one-GPU task is given a GPU that torch cannot use."""

import pytest
import ray
import torch

from ganlab.devices import DeviceError, device_name, trial_device


@pytest.mark.parametrize(
    "requested,gpu_ids,available,expected",
    [
        ("auto", None, True, "cuda"),  # outside Ray: a card when torch sees one
        ("auto", None, False, "cpu"),
        ("cuda", None, True, "cuda"),
        ("cpu", None, True, "cpu"),
        ("auto", [], True, "cpu"),  # a zero-GPU Ray task sees every card, and takes none
        ("auto", [], False, "cpu"),
        ("cpu", [0], True, "cpu"),
        ("auto", [0], True, "cuda"),
        ("cuda", ["1"], True, "cuda"),
        ("meta", [], False, "meta"),
    ],
)
def test_trial_device_follows_the_request_and_rays_assignment(
    requested, gpu_ids, available, expected
):
    assert trial_device(requested, gpu_ids, cuda_available=available) == torch.device(expected)


def test_a_card_torch_cannot_use_is_refused_with_the_driver_it_needs():
    with pytest.raises(DeviceError) as raised:
        trial_device("auto", [2, 3], cuda_available=False)
    message = str(raised.value)
    assert "Ray assigned this trial GPU 2, 3" in message
    assert f"torch {torch.__version__}" in message
    if torch.version.cuda is not None:
        assert f"built for CUDA {torch.version.cuda}" in message and "nvidia-smi" in message


def test_cuda_without_a_gpu_is_refused_inside_and_outside_ray():
    with pytest.raises(DeviceError, match="Ray assigned this trial no GPU"):
        trial_device("cuda", [], cuda_available=True)
    with pytest.raises(DeviceError, match="device 'cuda' was asked for, but torch"):
        trial_device("cuda", None, cuda_available=False)


def test_device_names():
    assert device_name("cpu") == "cpu"
    assert device_name(torch.device("meta")) == "meta"


@pytest.fixture
def local_ray():
    """A local Ray node that claims one GPU, whether or not this machine has one."""
    ray.init(address="local", num_gpus=1, num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_tasks_resolve_auto_by_their_gpu_assignment(local_ray):
    @ray.remote  # defined here: pickled by value, so the workers need not import this module
    def place() -> tuple[list, str, str]:
        ids = ray.get_gpu_ids()
        try:
            return ids, str(trial_device("auto", ids)), ""
        except DeviceError as error:
            return ids, "", str(error)

    zero = place.options(num_gpus=0).remote()
    one = place.options(num_gpus=1).remote()
    (zero_ids, zero_device, zero_error), (one_ids, one_device, one_error) = ray.get([zero, one])
    assert (zero_ids, zero_device, zero_error) == ([], "cpu", "")
    assert one_ids == [0]
    if torch.cuda.is_available():  # a card is here: the assigned one is used
        assert (one_device, one_error) == ("cuda", "")
        return
    assert one_device == ""
    assert one_error.startswith(f"Ray assigned this trial GPU 0, but torch {torch.__version__}")
    if torch.version.cuda is None:
        assert "CPU-only build" in one_error
    else:  # the pinned torch 2.14.1 is a CUDA 13.0 build: it names the driver it needs
        assert torch.version.cuda == "13.0"
        assert "built for CUDA 13.0, which needs an NVIDIA driver R580 or newer" in one_error
