# The two commands of the README: `make book` and `make test`. Each sets up .venv first when it is
# missing or older than requirements.txt / pyproject.toml, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: book test notebooks bench screenshots clean venv

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Build the HTML book from the committed, executed notebooks (no second execution), warnings as
# errors, then check the built site (offline assets, no remote scripts).
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going --quiet
	$(PY) tools/check_site.py _build/html

# Unit tests, notebook pair checks, strict nbval on every chapter, and the built-site / browser
# checks (the book is built first so those checks see the current sources).
test: book
	$(PY) -m pytest tests chapters --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

# Re-execute every chapter source (chapters/NN-name.md) into its paired .ipynb on CPU.
notebooks: $(STAMP)
	$(PY) tools/execute_notebooks.py $(NB)

bench: $(STAMP)
	$(PY) -m bench

screenshots: book
	$(PY) tools/screenshot.py _build/html

clean:
	rm -rf _build
