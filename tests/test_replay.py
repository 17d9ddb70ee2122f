"""The per-task replay buffer: order, wrap-around, masks, sampling, isolation, checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarl_jax.rl import replay


def _items(values, tasks=1):
    """Items whose ``x`` is ``values`` for each task (task t adds ``values + 1000 t``)."""
    values = jnp.asarray(values, jnp.float32)
    x = jnp.stack([values + 1000.0 * t for t in range(tasks)])
    return {"x": x, "pair": jnp.stack([x, -x], -1)}


def test_insertion_order_and_wrap_around():
    buffer = replay.init({"x": jnp.zeros(()), "pair": jnp.zeros((2,))}, 1, 5)
    buffer = replay.add(buffer, jnp.array([0]), _items([1, 2, 3]))
    np.testing.assert_array_equal(buffer.data["x"][0, :3], [1, 2, 3])
    assert int(buffer.size[0]) == 3 and int(buffer.position[0]) == 3
    buffer = replay.add(buffer, jnp.array([0]), _items([4, 5, 6, 7]))
    # ring of 5: 6 and 7 overwrite the oldest (1 and 2)
    np.testing.assert_array_equal(buffer.data["x"][0], [6, 7, 3, 4, 5])
    np.testing.assert_array_equal(buffer.data["pair"][0, :, 1], [-6, -7, -3, -4, -5])
    assert int(buffer.size[0]) == 5 and int(buffer.position[0]) == 2


def test_more_items_than_capacity_keeps_the_last_ones():
    buffer = replay.init({"x": jnp.zeros(()), "pair": jnp.zeros((2,))}, 1, 3)
    buffer = replay.add(buffer, jnp.array([0]), _items(np.arange(1, 8)))
    assert sorted(np.asarray(buffer.data["x"][0]).tolist()) == [5, 6, 7]
    assert int(buffer.size[0]) == 3


def test_valid_mask_skips_items_in_order():
    buffer = replay.init({"x": jnp.zeros(()), "pair": jnp.zeros((2,))}, 1, 6)
    valid = jnp.array([[True, False, True, False, True]])
    buffer = replay.add(buffer, jnp.array([0]), _items([1, 2, 3, 4, 5]), valid)
    np.testing.assert_array_equal(buffer.data["x"][0, :3], [1, 3, 5])
    assert int(buffer.size[0]) == 3


def test_per_task_isolation_and_clear():
    buffer = replay.init({"x": jnp.zeros(()), "pair": jnp.zeros((2,))}, 3, 4)
    buffer = replay.add(buffer, jnp.array([2, 0]), _items([1, 2], tasks=2))
    # task 2 got the first row (values 1, 2), task 0 the second (1001, 1002), task 1 nothing
    np.testing.assert_array_equal(buffer.data["x"][2, :2], [1, 2])
    np.testing.assert_array_equal(buffer.data["x"][0, :2], [1001, 1002])
    np.testing.assert_array_equal(buffer.size, [2, 0, 2])
    sample = replay.sample(buffer, jax.random.PRNGKey(0), jnp.array([0, 2, 2]), 50)
    assert set(np.asarray(sample["x"][0]).tolist()) == {1001, 1002}
    assert set(np.asarray(sample["x"][1]).tolist()) == {1, 2}
    buffer = replay.clear(buffer, jnp.array([2]))
    np.testing.assert_array_equal(buffer.size, [2, 0, 0])
    buffer = replay.add(buffer, jnp.array([2]), _items([9]))
    sample = replay.sample(buffer, jax.random.PRNGKey(1), jnp.array([2]), 20)
    assert set(np.asarray(sample["x"][0]).tolist()) == {9}


def test_sampling_is_uniform_over_stored_items():
    buffer = replay.init({"x": jnp.zeros(()), "pair": jnp.zeros((2,))}, 1, 8)
    buffer = replay.add(buffer, jnp.array([0]), _items(np.arange(5)))
    sample = replay.sample(buffer, jax.random.PRNGKey(0), jnp.array([0]), 50_000)
    counts = np.bincount(np.asarray(sample["x"][0]).astype(int), minlength=8)
    assert counts[5:].sum() == 0  # never an empty slot
    expected = 50_000 / 5
    chi2 = np.sum((counts[:5] - expected) ** 2 / expected)
    assert chi2 < 18.5  # 4 degrees of freedom, p = 0.001


def test_buffer_round_trips_through_a_checkpoint(tmp_path):
    from metarl_jax.training import checkpoint
    buffer = replay.init({"x": jnp.zeros(()), "pair": jnp.zeros((2,))}, 2, 4)
    buffer = replay.add(buffer, jnp.array([1]), _items([3, 4, 5]))
    manager = checkpoint.Checkpointer(tmp_path / "ckpt")
    manager.save(1, {"buffer": buffer}, {"elapsed_s": 0.0})
    manager.wait()
    restored = manager.restore(1, {"buffer": buffer})
    manager.close()
    for a, b in zip(jax.tree.leaves(buffer), jax.tree.leaves(restored.state["buffer"])):
        np.testing.assert_array_equal(a, b)
    assert replay.nbytes(buffer) == 2 * 4 * 3 * 4 + 2 * 2 * 4


def test_jit_and_bad_sizes():
    buffer = replay.init({"x": jnp.zeros(()), "pair": jnp.zeros((2,))}, 2, 4)
    add = jax.jit(replay.add)
    buffer = add(buffer, jnp.array([0, 1]), _items([1.0], tasks=2))
    np.testing.assert_array_equal(buffer.size, [1, 1])
    with pytest.raises(ValueError, match="capacity"):
        replay.init({"x": jnp.zeros(())}, 2, 0)
    with pytest.raises(ValueError, match="num_tasks"):
        replay.init({"x": jnp.zeros(())}, -1, 4)
    with pytest.raises(ValueError, match="batch_size"):
        replay.sample(buffer, jax.random.PRNGKey(0), jnp.array([0]), 0)


def test_sequences_are_the_items_stored_before_each_drawn_item():
    buffer = replay.init({"x": jnp.zeros(()), "pair": jnp.zeros((2,))}, 2, 5)
    buffer = replay.add_all(buffer, _items([1, 2, 3], tasks=2))
    runs, present = replay.sample_sequences(buffer, jax.random.PRNGKey(0), jnp.array([1, 0]),
                                            200, 3)
    assert runs["x"].shape == (2, 200, 3) and runs["pair"].shape == (2, 200, 3, 2)
    x, present = np.asarray(runs["x"]), np.asarray(present)
    # task 1 adds 1000 + value; each run ends at a stored item and steps back in order
    assert set(x[0, :, -1].tolist()) == {1001, 1002, 1003} and set(x[1, :, -1]) == {1, 2, 3}
    for run, mask in zip(x[1], present[1]):
        np.testing.assert_array_equal(mask, [run[-1] >= 3, run[-1] >= 2, True])
        np.testing.assert_array_equal(run[mask], np.arange(run[-1] - mask.sum() + 1, run[-1] + 1))
    # after wrap-around (ring of 5 holding 3..7) runs never reach past the oldest item
    buffer = replay.add_all(buffer, _items([4, 5, 6, 7], tasks=2))
    runs, present = replay.sample_sequences(buffer, jax.random.PRNGKey(1), jnp.array([0]), 300, 4)
    x, present = np.asarray(runs["x"][0]), np.asarray(present[0])
    assert set(x[:, -1].tolist()) == {3, 4, 5, 6, 7}
    for run, mask in zip(x, present):
        np.testing.assert_array_equal(run[mask], np.arange(run[-1] - mask.sum() + 1, run[-1] + 1))
        assert mask.sum() == min(4, run[-1] - 2)
