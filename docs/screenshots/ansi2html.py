# Renders a `tmux capture-pane -p -e` capture as HTML, for a screenshot
# with headless Chromium (docs/CHAT.md shows the pictures):
#   python3 ansi2html.py capture.ansi > capture.html
#   chromium --headless --screenshot=capture.png --window-size=930,560 capture.html
import sys, re, html
# xterm's 16 colours, then the 6x6x6 cube and the grey ramp.
BASE = ["#000000","#cd0000","#00cd00","#cdcd00","#0000ee","#cd00cd","#00cdcd","#e5e5e5",
        "#7f7f7f","#ff0000","#00ff00","#ffff00","#5c5cff","#ff00ff","#00ffff","#ffffff"]
def c256(n):
    if n < 16: return BASE[n]
    if n < 232:
        n -= 16; r, g, b = n // 36, (n // 6) % 6, n % 6
        f = lambda v: 0 if v == 0 else 55 + v * 40
        return "#%02x%02x%02x" % (f(r), f(g), f(b))
    v = 8 + (n - 232) * 10
    return "#%02x%02x%02x" % (v, v, v)
FG, BG = "#d0d0d0", "#1c1c1c"
def convert(text):
    st = dict(fg=None, bg=None, bold=False, dim=False, italic=False)
    out = []
    for line in text.split("\n"):
        parts = re.split(r"(\x1b\[[0-9;]*m)", line)
        row = []
        for p in parts:
            if p.startswith("\x1b["):
                codes = [int(c) if c else 0 for c in p[2:-1].split(";")]
                i = 0
                while i < len(codes):
                    c = codes[i]
                    if c == 0: st = dict(fg=None, bg=None, bold=False, dim=False, italic=False)
                    elif c == 1: st["bold"] = True
                    elif c == 2: st["dim"] = True
                    elif c == 3: st["italic"] = True
                    elif c == 22: st["bold"] = st["dim"] = False
                    elif c == 23: st["italic"] = False
                    elif c == 39: st["fg"] = None
                    elif c == 49: st["bg"] = None
                    elif 30 <= c <= 37: st["fg"] = BASE[c - 30]
                    elif 90 <= c <= 97: st["fg"] = BASE[c - 90 + 8]
                    elif 40 <= c <= 47: st["bg"] = BASE[c - 40]
                    elif 100 <= c <= 107: st["bg"] = BASE[c - 100 + 8]
                    elif c in (38, 48) and i + 2 < len(codes) and codes[i + 1] == 5:
                        st["fg" if c == 38 else "bg"] = c256(codes[i + 2]); i += 2
                    i += 1
            elif p:
                css = []
                if st["fg"]: css.append("color:" + st["fg"])
                if st["bg"]: css.append("background:" + st["bg"])
                if st["bold"]: css.append("font-weight:bold")
                if st["dim"]: css.append("opacity:0.6")
                if st["italic"]: css.append("font-style:italic")
                text = html.escape(p)
                # An emoji takes the columns tmux gave it: two, or four
                # with a skin tone (drawn after the hand).
                text = re.sub(r"([\U0001F300-\U0001FAFF\u2600-\u27BF](?:[\U0001F3FB-\U0001F3FF]|\u200d[\U0001F300-\U0001FAFF]|\uFE0F)*)",
                              lambda m: '<span style="display:inline-block;width:%dch">%s</span>' % (2 + 2 * len(re.findall("[\U0001F3FB-\U0001F3FF]", m.group(1))), m.group(1)),
                              text)
                row.append('<span style="%s">%s</span>' % (";".join(css), text))
        out.append("".join(row))
    return "\n".join(out)
src = open(sys.argv[1], encoding="utf-8").read().rstrip("\n")
print('<!doctype html><meta charset="utf-8"><body style="margin:0;background:%s">'
      '<pre style="margin:0;padding:8px;color:%s;font:15px/1.2 \'DejaVu Sans Mono\',\'Noto Color Emoji\',monospace">%s</pre>'
      % (BG, FG, convert(src)))
