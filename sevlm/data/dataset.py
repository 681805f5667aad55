"""Former home of the loading pipeline and the training examples, kept so that old imports
(``from sevlm.data.dataset import ...``) still work: the pipeline is now
:mod:`sevlm.data.pipeline`, the training examples :mod:`sevlm.data.examples`."""

from sevlm.data.examples import (  # noqa: F401
    EpochSampler,
    TrainingExamples,
    _SentenceBuilder,
    collate,
    make_train_loader,
    training_examples,
)
from sevlm.data.pipeline import (  # noqa: F401
    DATA_VERSION,
    EvalPaintings,
    PreparedData,
    SplitData,
    data_fingerprint,
    eval_batches,
    prepare_data,
    select_paintings,
)
