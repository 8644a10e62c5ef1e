// The authenticated read API, in front of a published tree (SPEC sections 1 and 4).
//
// nginx routes `/v2/conversations/{participant}[/mt|/mo|/summary]`, refuses hostile paths and
// methods, and computes the participant's fan-out directories (`$cs_participant_fanout`, from
// the MD5 of the name as nginx decodes it). This script does the rest: the owner from the Bearer
// token, the slice of the list the request asks for, the Link header, the ETag and every error
// as an RFC 9457 problem. Its settings come from `js_var`s of the generated configuration.
//
// njs runs each request in a fresh copy of this module: nothing is kept between requests, so a
// token that is added or revoked takes effect at the next request.

var fs = require('fs');
var crypto = require('crypto');

var PAGINATION_TYPE = '/v2/problems/pagination-parameters-invalid';
var TOKEN = /^Bearer +([A-Za-z0-9\-._~+\/]+=*) *$/i;
var DIGITS = /^[0-9]{1,15}$/;
// Every page is `[` + its messages, each written as `{"id":...}`, joined by `,` + `]`: `id` is
// the first key of a message (SPEC section 1) and no other object in a page starts with it.
// Inside a JSON string a `"` is escaped, so `,{"id":` is always a boundary between messages.
var BOUNDARY = Buffer.from(',{"id":');

function problem(r, status, title, detail, extra) {
    var body = {type: 'about:blank', title: title, status: status, detail: detail};
    if (extra) {
        Object.keys(extra).forEach(function (key) { body[key] = extra[key]; });
    }
    r.headersOut['Content-Type'] = 'application/problem+json';
    r.headersOut['Cache-Control'] = 'no-store';
    r.return(status, JSON.stringify(body));
}

function unauthorized(r, given) {
    r.headersOut['WWW-Authenticate'] = given ? 'Bearer error="invalid_token"' : 'Bearer';
    problem(r, 401, 'Unauthorized', given
        ? 'the Bearer token is unknown or revoked'
        : 'send the API token as `Authorization: Bearer <token>`');
}

function failed(r, detail) {
    r.error('convsum: ' + detail);
    problem(r, 500, 'Internal Server Error', 'the server could not read its data');
}

// The file's bytes, or null when it does not exist. Bytes, not text: decoding UTF-8 into an njs
// string costs more than all the rest of a request.
function readOrNull(path) {
    try {
        return fs.readFileSync(path);
    } catch (e) {
        if (e.code === 'ENOENT' || e.code === 'ENOTDIR') {
            return null;
        }
        throw e;
    }
}

// Without an exception for a missing file: njs builds one at the cost of a whole page read.
function exists(path) {
    return fs.lstatSync(path, {throwIfNoEntry: false}) !== undefined;
}

// The owner's directory under the served root, from the token store; null once answered.
function ownerDir(r) {
    var header = r.headersIn.Authorization;
    var match = header ? TOKEN.exec(header) : null;
    if (!match) {
        unauthorized(r, Boolean(header));
        return null;
    }
    var hash = crypto.createHash('sha256').update(match[1]).digest('hex');
    var entry = readOrNull(r.variables.cs_tokens + '/' + hash);
    if (entry === null) {
        unauthorized(r, true);
        return null;
    }
    var dir = entry.toString().trim();
    var segments = dir.split('/');
    var unsafe = segments.some(function (s) {
        return s === '' || s === '.' || s === '..' || s.indexOf('\0') >= 0;
    });
    if (unsafe) {
        failed(r, 'token entry ' + hash.slice(0, 12) + '... is not an owner directory');
        return null;
    }
    return dir;
}

function argument(r, errors, name, fallback, check, accepted) {
    var value = r.args[name];
    if (value === undefined) {
        return fallback;
    }
    var parsed = Array.isArray(value) ? undefined : check(value);
    if (parsed === undefined) {
        var shown = Array.isArray(value) ? 'given ' + value.length + ' times'
            : value === '' ? 'empty' : JSON.stringify(value.slice(0, 40));
        errors.push({name: name, reason: name + ' must be ' + accepted + ' (' + shown + ')'});
    }
    return parsed;
}

// start, limit and order, or null once a 400 is answered.
function pagination(r) {
    var max = Number(r.variables.cs_max_limit);
    var errors = [];
    var start = argument(r, errors, 'start', 0, function (v) {
        return DIGITS.test(v) ? Number(v) : undefined;
    }, 'a whole number from 0');
    var limit = argument(r, errors, 'limit', 50, function (v) {
        var n = DIGITS.test(v) ? Number(v) : 0;
        return n >= 1 && n <= max ? n : undefined;
    }, 'a whole number from 1 to ' + max);
    var order = argument(r, errors, 'order', 'ASC', function (v) {
        var upper = v.toUpperCase();
        return upper === 'ASC' || upper === 'DESC' ? upper : undefined;
    }, 'ASC or DESC, in any case');
    if (errors.length) {
        problem(r, 400, 'Pagination parameters invalid',
            errors.map(function (e) { return e.reason; }).join('; '),
            {type: PAGINATION_TYPE, 'invalid-params': errors});
        return null;
    }
    return {start: start, limit: limit, order: order};
}

var COMMA = Buffer.from(',');
var OPEN = Buffer.from('[');
var CLOSE = Buffer.from(']');

// The messages of one page, as views of its bytes (a page is never empty).
function messages(page) {
    var found = [];
    var from = 1;
    var at = page.indexOf(BOUNDARY, from);
    while (at >= 0) {
        found.push(page.subarray(from, at));
        from = at + 1;
        at = page.indexOf(BOUNDARY, from);
    }
    found.push(page.subarray(from, page.length - 1));
    return found;
}

// `[` + the parts joined by `,` + `]`.
function array(parts) {
    var pieces = [OPEN];
    parts.forEach(function (part, i) {
        pieces.push(i ? COMMA : OPEN.subarray(0, 0), part);
    });
    pieces.push(CLOSE);
    return Buffer.concat(pieces);
}

// One list of one conversation: its ASC page files, read at most once each.
function List(dir, name, size, groupDigits) {
    this.dir = dir;
    this.name = name;
    this.size = size;
    this.groupDigits = groupDigits;
    this.pages = {};
}

// publish.paths.page_file: the group directory is the start without its last k digits.
List.prototype.path = function (index) {
    var digits = String(index * this.size);
    var group = digits.slice(0, Math.max(digits.length - this.groupDigits, 0));
    return this.dir + '/p' + group + '/' + this.name + '.asc.' + digits + '.json';
};

List.prototype.page = function (index) {
    if (!(index in this.pages)) {
        this.pages[index] = readOrNull(this.path(index));
    }
    return this.pages[index];
};

// How many pages there are, given that page 0 exists: pages are numbered without gaps, so a
// doubling search for the first missing one, then a binary search, costs 2 log2(pages) checks.
List.prototype.pageCount = function () {
    var present = 0;
    var absent = 1;
    while (exists(this.path(absent))) {
        present = absent;
        absent *= 2;
    }
    while (absent - present > 1) {
        var middle = Math.floor((present + absent) / 2);
        if (exists(this.path(middle))) {
            present = middle;
        } else {
            absent = middle;
        }
    }
    return absent;
};

// The body of ASC positions [from, to) (to > from), or null when a page went missing meanwhile.
// Whole pages are copied as they are; only the first and last are cut into messages.
List.prototype.slice = function (from, to, reverse) {
    var first = Math.floor(from / this.size);
    var last = Math.floor((to - 1) / this.size);
    var parts = [];
    for (var index = first; index <= last; index++) {
        var page = this.page(index);
        if (page === null) {
            return null;
        }
        var low = from - index * this.size;
        var high = to - index * this.size;
        if (!reverse && low <= 0 && high >= this.size) {
            parts.push(page.subarray(1, page.length - 1));
            continue;
        }
        var all = messages(page);
        parts.push.apply(parts, all.slice(Math.max(low, 0), Math.min(high, all.length)));
    }
    if (first === last && parts.length === 1 && parts[0].length === this.page(first).length - 2) {
        return this.page(first);  // one whole page: its file as it is
    }
    return array(reverse ? parts.reverse() : parts);
};

// The number of messages in the list (0 for none), -1 when the conversation is unknown, -2 when
// a page went missing meanwhile.
List.prototype.count = function (summary) {
    if (this.page(0) === null) {
        return exists(summary) ? 0 : -1;
    }
    var pages = this.pageCount();
    var tail = this.page(pages - 1);
    if (tail === null) {
        return -2;
    }
    return (pages - 1) * this.size + messages(tail).length;
};

// scheme://host of the request, as the client sent it or as a trusted proxy passed it on.
function origin(r) {
    var v = r.variables;
    var scheme = v.scheme;
    var host = v.http_host;
    if (v.cs_trusted_proxy === '1') {
        var proto = (r.headersIn['X-Forwarded-Proto'] || '').split(',')[0].trim().toLowerCase();
        var forwarded = (r.headersIn['X-Forwarded-Host'] || '').split(',')[0].trim();
        scheme = proto === 'http' || proto === 'https' ? proto : scheme;
        host = forwarded || host;
    }
    if (!host || !/^[A-Za-z0-9.\-_~\[\]:]+$/.test(host)) {
        host = v.server_addr.indexOf(':') >= 0 ? '[' + v.server_addr + ']' : v.server_addr;
        host += ':' + v.server_port;
    }
    return scheme + '://' + host;
}

function linkHeader(r, path, page, n) {
    var base = origin(r) + path + '?start=';
    var tail = '&limit=' + page.limit + '&order=' + page.order + '>; rel="';
    var links = [[0, 'first']];
    if (page.start > 0) {
        links.push([Math.max(page.start - page.limit, 0), 'prev']);
    }
    if (page.start + page.limit < n) {
        links.push([page.start + page.limit, 'next']);
    }
    links.push([n > 0 ? Math.floor((n - 1) / page.limit) * page.limit : 0, 'last']);
    return links.map(function (l) { return '<' + base + l[0] + tail + l[1] + '"'; }).join(', ');
}

// A weak validator: gzip changes the bytes but not what they say.
function fresh(r, etag) {
    var given = r.headersIn['If-None-Match'];
    if (!given) {
        return false;
    }
    var tag = etag.slice(2);
    return given.split(',').some(function (t) {
        t = t.trim();
        return t === '*' || t === tag || t === 'W/' + tag;
    });
}

// gzip_vary is off in the configuration so that one Vary names both.
function ok(r, body, cacheControl, vary) {
    var etag = 'W/"' + crypto.createHash('md5').update(body).digest('hex') + '"';
    r.headersOut.ETag = etag;
    r.headersOut['Cache-Control'] = cacheControl;
    r.headersOut.Vary = vary;
    r.headersOut['Content-Type'] = 'application/json';
    r.return(fresh(r, etag) ? 304 : 200, body);
}

function answerList(r, list, summary, path) {
    var page = pagination(r);
    if (page === null) {
        return;
    }
    var n = list.count(summary);
    if (n === -1) {
        problem(r, 404, 'Not Found', 'no such participant');
        return;
    }
    var body = Buffer.from('[]');
    var end = Math.min(page.start + page.limit, n);
    if (n >= 0 && page.start < end) {
        body = page.order === 'ASC'
            ? list.slice(page.start, end, false)
            : list.slice(n - end, n - page.start, true);
    }
    if (n < 0 || body === null) {
        r.headersOut['Retry-After'] = '1';
        problem(r, 503, 'Service Unavailable', 'the conversation is being updated; try again');
        return;
    }
    r.headersOut.Link = linkHeader(r, path, page, n);
    ok(r, body, r.variables.cs_cache_control, 'Accept-Encoding, Authorization');
}

function conversation(r) {
    var v = r.variables;
    var owner = ownerDir(r);
    if (owner === null) {
        return;
    }
    var participant = v.cs_participant;
    var dir = v.document_root + '/' + owner + '/v2/conversations/' + v.cs_participant_fanout +
        '/' + participant;
    var summary = dir + '/summary.json';
    var endpoint = v.cs_endpoint || '';
    if (endpoint === 'summary') {
        var text = readOrNull(summary);
        if (text === null) {
            problem(r, 404, 'Not Found', 'no such participant');
            return;
        }
        ok(r, text, v.cs_cache_control, 'Accept-Encoding, Authorization');
        return;
    }
    if (v.cs_lists !== '1') {
        // A run with --only summaries: the participant's summary may exist, its lists do not.
        problem(r, 404, 'Not Found', readOrNull(summary) === null
            ? 'no such participant' : 'this run published summaries only');
        return;
    }
    var list = new List(dir, endpoint || 'all', Number(v.cs_page_size),
        Number(v.cs_page_group_digits));
    var path = '/v2/conversations/' + encodeURIComponent(participant) +
        (endpoint ? '/' + endpoint : '');
    answerList(r, list, summary, path);
}

function guarded(handler) {
    return function (r) {
        try {
            handler(r);
        } catch (e) {
            failed(r, String(e));
        }
    };
}

// Which run is served, and since when: no owner's data.
function health(r) {
    var manifest;
    try {
        manifest = JSON.parse(fs.readFileSync(r.variables.cs_manifest, 'utf8'));
    } catch (e) {
        r.error('convsum: ' + String(e));
        problem(r, 503, 'Service Unavailable', 'no published run to serve');
        return;
    }
    var body = JSON.stringify({
        status: 'ok', run_id: manifest.run_id, started_at: manifest.started_at,
    });
    ok(r, body, 'no-cache', 'Accept-Encoding');
}

export default {conversation: guarded(conversation), health: guarded(health)};
