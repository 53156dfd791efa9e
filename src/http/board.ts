/**
 * `/board`: the live queue board, a static page (src/http/board/: HTML, one script, one style sheet)
 * served from local files, like Swagger UI. The page holds no data: everything it shows comes from
 * the API with the caller's token, so it is served openly.
 */
import { fileURLToPath } from 'node:url';
import express from 'express';

/** The page's folder: beside this module, in src/ and in dist/ (`npm run build` copies it). */
export const BOARD_DIR = fileURLToPath(new URL('./board/', import.meta.url));

export function boardRoute(): express.Handler {
  // `/board` redirects to `/board/`, so the page's relative URLs (board.js, ../api/) resolve.
  return express.static(BOARD_DIR, { index: 'index.html', redirect: true, fallthrough: true, maxAge: 0 });
}
