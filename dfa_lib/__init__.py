"""dfa_lib: Feedback Alignment, Direct Feedback Alignment and local learning rules in plain PyTorch.

The companion library of dfa-book.  A minimal run::

    from dfa_lib import MLP, DFA, train, load_mnist, seed_everything
    seed_everything(0)
    data = load_mnist()
    model = MLP([784, 200, 10], hidden="tanh")          # returns logits, as PyTorch models do
    history = train(model, DFA(model), data, epochs=5, lr=0.1, loss="bce")  # sigmoid + binary cross-entropy
    history.plot()

The same rule trains the model in your own loop (``loss.backward(); optimizer.step()``): a rule
built on a model puts hooks on its layers.  ``rule_of(model)`` says which rule a model carries,
``detach(model)`` takes it off (chapter 10).
"""
from .data import Data, MNISTNotFoundError, linear_teacher, load_mnist, logic_gate
from .losses import output_error, per_example_loss, predictions
from .metrics import (
    alignment,
    alignment_angles,
    alignment_from_cache,
    angle_degrees,
    confusion_matrix,
    error_rate,
)
from .models import MLP, ForwardCache
from .parallel import run_concurrently
from .history import History
from .rules import (
    BP,
    BRSF,
    DFA,
    DRTP,
    FA,
    FRSF,
    USF,
    FeedbackPoint,
    add_feedback_points,
    FeedbackRule,
    KolenPollack,
    SelfAttention,
    Shallow,
    detach,
    init_feedback,
    learning_layers,
    make_rule,
    nokland_scale,
    rule_of,
    split_attention,
)
from .seeds import SeedBatch, batch_rules
from .stats import spread
from .step import TrainingDivergedError
from .train import evaluate, train
from .update import compute_grads, sgd_update, write_grads
from .attacks import fgsm, input_gradient_of_loss, pgd, random_sign_noise
from .utils import get_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "BP", "DFA", "FA", "Shallow", "USF", "FRSF", "BRSF", "KolenPollack", "DRTP", "FeedbackRule", "make_rule",
    "rule_of", "detach", "FeedbackPoint", "add_feedback_points", "SelfAttention", "split_attention",
    "init_feedback", "nokland_scale", "learning_layers", "alignment",
    "compute_grads", "write_grads", "sgd_update", "MLP", "ForwardCache", "train", "evaluate", "History",
    "TrainingDivergedError", "Data", "logic_gate", "linear_teacher", "load_mnist", "MNISTNotFoundError",
    "error_rate", "confusion_matrix", "angle_degrees",
    "alignment_angles", "alignment_from_cache", "output_error", "per_example_loss", "predictions",
    "seed_everything", "get_device", "SeedBatch", "batch_rules", "spread", "run_concurrently",
    "fgsm", "pgd", "random_sign_noise", "input_gradient_of_loss",
]
