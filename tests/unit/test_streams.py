"""magcache.streams: one code path for a hidden state of one stream and of several."""
import torch
from comfyui_magcache.magcache import streams


def test_one_stream_and_several_go_through_the_same_operations():
    one = torch.arange(24.0).reshape(2, 3, 4)
    two = (one, torch.ones(2, 5, 6))
    assert streams.tokens(one) == 3 and streams.tokens(two) == (3, 5)
    assert streams.batch(two) == 2
    assert torch.equal(streams.add(one, one), one * 2)
    diff = streams.sub(two, streams.clone(two))
    assert isinstance(diff, tuple) and all(torch.equal(d, torch.zeros_like(d)) for d in diff)
    top, bottom = streams.rows(two, 0, 1), streams.rows(two, 1, 2)
    assert [p.shape[0] for p in top] == [1, 1]
    back = streams.cat_rows([top, bottom])
    assert all(torch.equal(a, b) for a, b in zip(back, two))


def test_the_clone_is_contiguous_and_its_own_memory():
    view = torch.zeros(2, 4, 3).transpose(1, 2)
    copy = streams.clone(view)
    assert copy.is_contiguous() and copy.data_ptr() != view.data_ptr()


def test_layouts_match_only_stream_by_stream():
    a = (torch.zeros(1, 3, 4), torch.zeros(1, 2, 8))
    assert streams.same_layout(a, (torch.ones(1, 3, 4), torch.ones(1, 2, 8)))
    assert not streams.same_layout(a, (torch.ones(1, 3, 4), torch.ones(1, 3, 8)))
    assert not streams.same_layout(a, torch.zeros(1, 3, 4))
    assert not streams.same_layout(a[0], a[0].double())


def test_streams_with_different_batches_or_no_tokens_have_no_token_count():
    assert streams.tokens((torch.zeros(2, 3, 4), torch.zeros(1, 3, 4))) is None
    assert streams.tokens(torch.zeros(3)) is None
    assert streams.tokens(("not", "tensors")) is None
