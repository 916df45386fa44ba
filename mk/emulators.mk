# kinesalite + dynalite from npm (pinned by tests/emulators/package-lock.json) into .emulators/.
# The tests start them on 127.0.0.1 through tests/emulators/serve.js.
EMULATORS := .emulators/node_modules/.installed

$(EMULATORS): tests/emulators/package.json tests/emulators/package-lock.json
	mkdir -p .emulators
	cp tests/emulators/package.json tests/emulators/package-lock.json .emulators/
	cd .emulators && npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: emulators
emulators: $(EMULATORS)

TEST_DEPS += emulators
