"""What each configuration key means, in words for maintainers.

Used for the JSON Schemas (editors show it on hover) and for docs/configuration.md, which
``treaty-bot schema --markdown`` writes. A test checks that every key has a description.
Paths: ``a.b`` for nested keys, ``[]`` for the items of a list, ``<name>`` for the keys of a map.
"""

from __future__ import annotations

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "bot.yaml": {
        "timezone": "The coalition's time zone (IANA name): dates are shown in it, and "
        "datetimes written without an offset are read in it.",
        "storage": "Where the state lives: a file (TinyDB JSON, relative to the working "
        "directory; one bot at a time; back it up by copying it), or a PostgreSQL database, "
        "`postgresql://user:password@host/database`. "
        "`TREATY_BOT_DATABASE_URL` in the environment, when set, wins (the better place for a "
        "password). A password is never shown: logs and messages print `***`. "
        "`treaty-bot migrate --to` moves a state between the two.",
        "channels": "Logical channels (alerts, ops, …) and where each lives. `{}` means "
        "nowhere but the console. Alerts about failing sources go to `ops`.",
        "channels.<name>": "One logical channel.",
        "channels.<name>.slack": "The Slack channel id (C0123ABCD), not its #name.",
        "channels.<name>.matrix": "The Matrix room id (!AbCdEf:example.org), not its #alias.",
        "channels.<name>.digest": "Gather this channel's news into one message a day, e.g. "
        '`{at: "09:00", days: [mon, tue, wed, thu, fri]}`. Other kinds stay immediate unless '
        "`kinds` lists them. An empty digest posts nothing; one missed while the bot was down "
        "is posted at the next start.",
        "channels.<name>.digest.at": 'The local time of the digest, e.g. "09:00" (in quotes).',
        "channels.<name>.digest.days": "The days it is posted: mon, tue, wed, thu, fri, sat, "
        "sun (default: every day).",
        "channels.<name>.digest.timezone": "The time zone of `at` (default: `timezone`).",
        "channels.<name>.digest.kinds": "The alert kinds it gathers (default: [news]); others "
        "are posted at once.",
        "channels.<name>.quiet": "Quiet hours, e.g. "
        '`{from: "22:00", to: "07:00"}`: alerts that can wait are held and posted as one '
        "message when the quiet period ends. Urgent ones go through: a reminder for something "
        "that starts before the end, a session change for an event within 48 hours, and the "
        "kinds listed in `urgent`.",
        "channels.<name>.quiet.from": 'When the quiet period starts (local time, "22:00").',
        "channels.<name>.quiet.to": 'When it ends (local time, "07:00"; the next day if '
        "earlier than `from`).",
        "channels.<name>.quiet.timezone": "The time zone of `from` and `to` (default: `timezone`).",
        "channels.<name>.quiet.urgent": "Kinds that always go through, e.g. [source-health] "
        "for an ops channel.",
        "channels.<name>.lead_times": "This channel's own reminder lead times, replacing "
        "`reminders.lead_times` there (a session's own lead times still win).",
        "reminders": "Reminders before sessions, meetings and deadlines.",
        "reminders.lead_times": "When to remind before each start; `0m` is at the start.",
        "reminders.channels": "Where reminders and session changes go, unless an entry says.",
        "slack": "Slack settings (the tokens come from the environment).",
        "slack.mode": "`socket` (Socket Mode: no public URL needed) or `http` (Slack calls "
        "the bot's HTTP server at /slack/events).",
        "http": "The bot's own HTTP server: /healthz, /metrics, /calendar.ics and Slack's "
        "HTTP endpoint.",
        "http.host": "The address to listen on; 127.0.0.1 keeps it private to the machine.",
        "http.port": "The port; 0 turns the server off (not possible in Slack http mode). "
        "Without it: 8080, or $PORT on 0.0.0.0 where the environment gives PORT (Procfile "
        "platforms).",
        "http.public_url": "Where the world reaches this server (e.g. https://bot.example.org), "
        "if it does: `next-session`, `sessions` and reminders then invite members to subscribe "
        "to the timeline at <public_url>/calendar.ics, and feeds that name a WebSub hub are "
        "subscribed to, their hubs pushing new items to <public_url>/websub/<feed id>.",
        "matrix": "Matrix settings (the credentials come from the environment).",
        "matrix.command_prefix": "What starts a command in a Matrix room.",
        "admins": "Who may run the admin commands `status` and `reload`.",
        "admins.slack": "Slack user ids (U0123ABCD).",
        "admins.matrix": "Matrix user ids (@alice:example.org).",
        "fetch": "How feeds and calendars are fetched.",
        "fetch.timeout": "The most one request may take, body included.",
        "fetch.max_bytes": "The largest body accepted (after decompression), e.g. 5MB.",
        "fetch.per_host": "At most this many requests in flight to one host.",
        "fetch.max_in_flight": "At most this many requests in flight overall.",
        "fetch.backoff_cap": "The longest wait between polls of a failing source.",
        "replicas": "Several `treaty-bot run` on one PostgreSQL database (docs/scaling.md); "
        "ignored with a state file.",
        "replicas.shards": "The sources are split into this many shards, each polled by one "
        "replica at a time (1 to 1024).",
        "replicas.lease": "How long a replica holds its shards without renewing them: a replica "
        "that dies loses them to the others after this long (3s to 10m).",
    },
    "feeds.yaml": {
        "defaults": "Values for every feed that does not set its own.",
        "feeds": "The news feeds to watch (RSS, Atom, JSON Feed).",
        "feeds[].id": "A unique id: lower-case letters, digits and dashes.",
        "feeds[].name": "The name shown in alerts (default: the id).",
        "feeds[].url": "The feed's http(s) address.",
    },
    "sessions.yaml": {
        "calendars": "iCalendar (.ics) sources of sessions, over http(s) or as a file.",
        "calendars[].id": "A unique id (also among feeds).",
        "calendars[].name": "The name shown in alerts (default: the id).",
        "calendars[].url": "An http(s) address, or a path relative to the config directory.",
        "calendars[].every": "How often to fetch it (at least 1m).",
        "calendars[].match": "Keep only events whose summary or description has one of these.",
        "calendars[].exclude": "Drop events whose summary or description has one of these.",
        "calendars[].channels": "Where its reminders and changes go.",
        "calendars[].kind": "What its events are: session, informal or deadline.",
        "calendars[].timezone": "The zone for times without one (else X-WR-TIMEZONE, then "
        "bot.yaml's).",
        "calendars[].lead_times": "Reminder lead times for its events (default: bot.yaml's).",
        "calendars[].failures_before_alert": "Failed fetches in a row before the ops alert.",
        "sessions": "Sessions, meetings and deadlines written by hand.",
        "sessions[].id": "A unique id: lower-case letters, digits and dashes.",
        "sessions[].title": "What it is called.",
        "sessions[].kind": "session, informal (a meeting) or deadline.",
        "sessions[].start": "When it starts: a date (all day) or a datetime; without an "
        "offset it is read in `timezone`.",
        "sessions[].end": "When it ends (a date is the last day, included).",
        "sessions[].timezone": "The venue's time zone; dates are shown in it too.",
        "sessions[].location": "The venue and city.",
        "sessions[].url": "Where to read more (an http(s) address).",
        "sessions[].status": "scheduled, tentative, postponed, cancelled or concluded; "
        "changing it posts a change alert.",
        "sessions[].channels": "Where its reminders and changes go (default: reminders.channels).",
        "sessions[].lead_times": "Its own reminder lead times.",
        "sessions[].notes": "A note for maintainers and the `sessions` answers.",
    },
    "clauses.yaml": {
        "channels": "Where clause status changes are posted.",
        "clauses": "The provisions the coalition tracks.",
        "clauses[].id": "A unique id such as art-4; `clause 4` also finds it by article.",
        "clauses[].article": 'The article number as written, e.g. "4", "7-10", "28(4)".',
        "clauses[].title": "The article's title.",
        "clauses[].status": "open, contested, agreed, adopted, reserved or deferred; "
        "changing it posts a clause alert.",
        "clauses[].summary": "One or two sentences in plain words.",
        "clauses[].concerns": "Short tags: scope, human-rights, surveillance, …",
        "clauses[].links": "Analyses and sources (http(s) addresses).",
        "clauses[].updated": "When this entry was last reviewed (a date).",
    },
    "treaty.yaml": {
        "depositary": "The treaty's status as the UN depositary publishes it (MTDSG XML): each "
        "signature, ratification, acceptance, approval, accession, declaration or reservation "
        "becomes a treaty-action alert. Without it, nothing is read.",
        "depositary.name": "How the source is named in alerts and `feeds`.",
        "depositary.url": "The depositary's XML document (http(s)), or a file in config/.",
        "depositary.page": "The page people can open (linked from alerts and answers).",
        "depositary.every": "How often to poll (at least 1m; the record changes a few times a "
        "month).",
        "depositary.channels": "Where treaty-action alerts and the computed dates' changes go.",
        "depositary.failures_before_alert": "Failed polls in a row before the ops channel is told.",
        "entry_into_force": "How entry into force is computed from the record (article 65).",
        "entry_into_force.instruments": "The number of instruments of ratification, acceptance, "
        "approval or accession that bring the treaty into force.",
        "entry_into_force.days_after": "Entry into force falls on this day after the deposit "
        "of the last instrument needed (the 90th day: 90).",
        "entry_into_force.not_counted": "Participants whose instrument does not count on top of "
        "their member States' (regional economic integration organisations).",
    },
}

_FEED_KEYS = {
    "every": "How often to poll (at least 1m).",
    "channels": "Where its news alerts go.",
    "match": "Post an item only if its title or summary has one of these: words or phrases "
    "(case-insensitive, whole words) or /regex/. Empty: every item.",
    "exclude": "Never post an item that has one of these.",
    "backfill": "On the first poll, post the N newest matching items (0: none).",
    "max_new_items": "Up to this many new items of one poll are posted one alert each; above "
    "it, one grouped message lists every item (split into parts where a platform needs it). "
    "Above it too, when more than half of the new items repeat the title and link of an item "
    "already shown or are dated over an hour before the last successful poll, the feed "
    "re-issued them: they are summarised in one alert and not posted again.",
    "failures_before_alert": "Failed polls in a row before the ops channel is told.",
    "every_max": "The longest interval adaptive polling may reach for a feed that does not "
    "change (default: 6 × every); `every` is the shortest. Set it to `every` for a fixed "
    "schedule.",
    "during_sessions": "Poll at this interval while a session of the timeline is on and "
    "during the day before it starts, e.g. 5m.",
}
for _key, _text in _FEED_KEYS.items():
    DESCRIPTIONS["feeds.yaml"][f"defaults.{_key}"] = _text
    DESCRIPTIONS["feeds.yaml"][f"feeds[].{_key}"] = _text
