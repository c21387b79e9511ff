import pytest

from tether_operator.k8s.resources.naming import pool_id_for, pool_object, run_id_for, run_object


def test_run_ids_round_trip_names_with_dots() -> None:
    assert run_object(run_id_for("team-a", "nightly.v2-x7k2p")) == ("team-a", "nightly.v2-x7k2p")


@pytest.mark.parametrize("bad", ["plain", ".name", "ns."])
def test_a_run_id_without_namespace_and_name_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="does not name a WorkflowRun"):
        run_object(bad)


def test_pool_ids_round_trip_and_refuse_what_names_no_pool() -> None:
    assert pool_object(pool_id_for("team-a", "gpu.v2")) == ("team-a", "gpu.v2")
    with pytest.raises(ValueError, match="does not name a WorkerPool"):
        pool_object("gpu")
