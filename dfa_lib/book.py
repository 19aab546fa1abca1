"""What the book's chapters need from the book build, made to run outside it as well.

Every chapter pastes computed numbers into its prose with myst-nb's ``glue``.  myst-nb is part
of the book's tooling (the ``book`` extra), not of a reader's Colab or Jupyter, where a chapter
must run all the same: there :func:`glue` shows the value (or nothing) instead.  Used by every
chapter from ``book/01_linear_fa.ipynb`` on.
"""
from __future__ import annotations


def glue(name: str, variable, display: bool = True) -> None:
    """myst-nb's ``glue(name, variable, display)`` in the book build; elsewhere just the display.

    With myst-nb installed (``pip install "dfa_lib[book]"``, as the book build has it) this is
    ``myst_nb.glue``, so ``{glue:text}`name``` in the chapter's text picks the value up.
    Without it (Colab, a plain Jupyter) the value is shown when ``display`` is true, as
    myst-nb would show it, and otherwise nothing happens.
    """
    try:
        from myst_nb import glue as myst_nb_glue
    except ImportError:  # not building the book: there is no text to paste the value into
        if display:
            from IPython.display import display as show

            show(variable)
        return
    myst_nb_glue(name, variable, display)


def html_table(header, rows):
    """A small HTML table, right-aligned, that renders the same in Jupyter, Colab and the book.

    ``header`` is a list of column titles, ``rows`` a list of lists of values (shown with ``str``).
    Chapters 3 and 4 show their per-digit scores and per-run accuracies with it.
    """
    from IPython.display import HTML

    cell = lambda tag, v: f"<{tag} style='text-align:right'>{v}</{tag}>"
    lines = ["<tr>" + "".join(cell("th", h) for h in header) + "</tr>"]
    lines += ["<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in rows]
    return HTML("<table>" + "".join(lines) + "</table>")
