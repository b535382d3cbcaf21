"""The neighbour index (`pricer.data.neighbors`) on the real sample: no item is its own neighbour,
validation and test draw from train only, the saved index reads back identical and a broken one is
one error line; prompts that list neighbours for the base and the chat tiny model; a short real
fine-tune with neighbours whose folder prices without the data."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pricer.data.dataset import as_items, load_splits
from pricer.data.neighbors import FOLDER, Neighbor, NeighborIndex, knn_price
from pricer.errors import DataError


@pytest.fixture(scope="module")
def splits(built_data: Path):
    data = load_splits(built_data)
    return {name: as_items(data[name]) for name in ("train", "validation", "test")}


def test_a_train_item_never_gets_itself_or_a_copy(splits) -> None:
    # numbered titles tell which product a neighbour is ("#12 ...")
    train = [replace(item, title=f"#{n} {item.title}") for n, item in enumerate(splits["train"][:400])]
    first, second = train[0], train[1]
    items = [*train, replace(first, title="#400 the same text under another title"),
             replace(second, text=second.text + " Sold by a second seller.")]  # #1 again: the same title

    def ids(row: list[Neighbor]) -> set[int]:
        return {int(n.title.split()[0][1:]) for n in row}

    index = NeighborIndex.build(items)
    own = index.query([first.text, second.text], 5, titles=[first.title, second.title])
    assert [len(row) for row in own] == [5, 5]
    assert not ids(own[0]) & {0, 400}
    assert 1 not in ids(own[1])
    # asked without its title, the first still skips its text's copies; the second's other text is
    # then a near neighbour, which only the title rule keeps out
    assert not ids(index.query([first.text], 5)[0]) & {0, 400}
    assert 1 in ids(index.query([second.text], 5)[0])


def test_the_built_index_holds_train_only_so_validation_and_test_draw_no_price_from_themselves(
        built_data: Path, splits) -> None:
    from pricer.data.neighbors import _hashes

    index = NeighborIndex.load(built_data / FOLDER)  # built with the data, beside its splits
    train = splits["train"]
    assert len(index) == len(train)
    assert index.prices.tolist() == [i.price for i in train]
    for name in ("validation", "test"):
        held_out = splits[name]
        assert not set(_hashes([i.text for i in held_out]).tolist()) & set(index.text_keys.tolist())
        found = index.query([i.text for i in held_out[:50]], 5)
        assert all(len(row) == 5 and row[0].similarity >= row[-1].similarity for row in found)


def test_queries_are_exact_the_dense_cosine_top_k(splits) -> None:
    from pricer.data.neighbors import _hashes

    index = NeighborIndex.build(splits["train"])
    held_out = splits["test"][:40]
    found = index.query([i.text for i in held_out], 5)
    dense = (index.vectors([i.text for i in held_out]) @ index.matrix.T).toarray()
    for row, scores, item in zip(found, dense, held_out, strict=True):
        scores[index.text_keys == _hashes([item.text])[0]] = -1  # its own copies never count
        best = np.lexsort((np.arange(len(scores)), -scores))[:5]
        assert [n.price for n in row] == index.prices[best].tolist()
        assert [n.similarity for n in row] == pytest.approx(scores[best].tolist(), abs=1e-6)


def test_knn_price_is_the_similarity_weighted_geometric_mean() -> None:
    near = [Neighbor("a", 100.0, 0.75), Neighbor("b", 10.0, 0.25)]
    assert knn_price(near) == pytest.approx(100 ** 0.75 * 10 ** 0.25)
    assert knn_price([Neighbor("a", 40.0, 0.0), Neighbor("b", 10.0, 0.0)]) == pytest.approx(20.0)
    assert knn_price([]) is None


def test_the_saved_index_reads_back_identical(tmp_path: Path, splits) -> None:
    index = NeighborIndex.build(splits["train"][:500])
    loaded = NeighborIndex.load(index.save(tmp_path / "index"))
    assert (loaded.matrix != index.matrix).nnz == 0
    for name in ("idf", "prices", "text_keys", "title_keys"):
        assert np.array_equal(getattr(loaded, name), getattr(index, name))
    texts = [i.text for i in splits["test"][:20]]
    assert loaded.query(texts, 5) == index.query(texts, 5)
    # the files are numpy arrays and JSON: nothing in them is unpickled
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["arrays.npz", "index.json", "matrix.npz",
                                                                      "titles.json"]


@pytest.mark.parametrize("damage", ["truncate", "missing", "format"])
def test_a_broken_index_is_one_error_line_naming_the_file(tmp_path: Path, splits, damage: str) -> None:
    folder = NeighborIndex.build(splits["train"][:100]).save(tmp_path / "index")
    if damage == "truncate":
        (folder / "matrix.npz").write_bytes((folder / "matrix.npz").read_bytes()[:200])
    elif damage == "missing":
        (folder / "arrays.npz").unlink()
    else:
        (folder / "index.json").write_text('{"format": 99}')
    with pytest.raises(DataError) as caught:
        NeighborIndex.load(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message and "pricer data build" in message


@pytest.fixture(scope="module", params=["gemma-3-270m", "smollm2-135m-instruct"])
def model(request, tiny_models):
    from pricer.model.loading import load_tokenizer

    spec = tiny_models[request.param]
    return spec, load_tokenizer(spec)


def test_the_prompt_lists_each_neighbours_title_and_whole_dollar_price_before_the_product(model, splits) -> None:
    from pricer.model.prompts import IGNORE, SIMILAR, encode, prompt_text, template_tokens

    spec, tokenizer = model
    item = splits["test"][0]
    found = NeighborIndex.build(splits["train"]).query([item.text], 3)[0]
    text = prompt_text(tokenizer, item.text, chat=spec.chat, max_tokens=64, neighbors=found)
    plain = prompt_text(tokenizer, item.text, chat=spec.chat, max_tokens=64)
    assert text.index(SIMILAR) < text.index(item.text[:40])
    for n in found:
        assert f": ${round(n.price)}\n" in text + "\n"
        assert n.title.split()[0] in text
    if spec.chat:  # inside the user turn of the template, like the question
        assert text.index(SIMILAR) > text.index("user")
    example = encode(tokenizer, item.text, item.price, chat=spec.chat, max_tokens=64, neighbors=found)
    assert tokenizer.decode([t for t in example.labels if t != IGNORE]) == f"{round(item.price)}.00"
    longer = len(example.prompt_ids) - len(encode(tokenizer, item.text, chat=spec.chat, max_tokens=64).prompt_ids)
    assert longer > 3 * 5  # three neighbour lines
    # the token budget the memory plan counts covers the real prompt
    assert len(example.input_ids) <= 64 + template_tokens(tokenizer, chat=spec.chat, neighbors=3)
    assert template_tokens(tokenizer, chat=spec.chat, neighbors=3) > template_tokens(tokenizer, chat=spec.chat)
    assert text != plain


@pytest.mark.slow
def test_a_fine_tune_with_neighbours_prices_from_its_folder_without_the_data(
        tiny_models, built_data: Path, tmp_path: Path) -> None:
    from pricer.predict.predictor import load_predictor
    from pricer.train.loop import TrainConfig, train

    data = tmp_path / "data"
    shutil.copytree(built_data, data)
    config = TrainConfig(model="smollm2-135m-instruct", max_steps=2, batch_size=2, max_tokens=32, train_items=8,
                         eval_items=2, test_items=3, learning_rate=1e-3, warmup_steps=0, neighbors=2,
                         decode="greedy")
    result = train(config, data, tmp_path / "adapter", progress=False)
    test = as_items(load_splits(data)["test"])[:3]
    shutil.rmtree(data)  # the folder alone prices: its index travels with it

    assert (result.adapter_dir / FOLDER / "index.json").is_file()
    assert result.test_metrics.prompt_tokens_mean > 32
    predictor = load_predictor(result.adapter_dir)
    assert predictor.neighbors == 2
    assert predictor.predict([i.text for i in test]) == [p["predicted"] for p in result.predictions]
